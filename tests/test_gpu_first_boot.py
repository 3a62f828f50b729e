"""The first boot of an NCv3 (NVIDIA V100) VM, run for real in a throwaway root.

The stubs of tests/test_first_boot.py and tests/test_k3s_first_boot.py, plus what a GPU VM has:
`ubuntu-drivers` and `modprobe` that load a driver (or not, until a reboot), an `nvidia-smi` that
sees the GPUs only once the driver's packages are installed and loaded, `nvidia-ctk` writing
Docker's runtime, an apt that puts nvidia-container-runtime on the disk when the toolkit is
installed, K3s that renders containerd's config from what it finds (the runtime binary, and
default-runtime in its config) as K3s does when it starts, and a kubectl whose GPU check pod sees
as many GPUs as the test says. No CUDA anywhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from edge import cluster_manifests, first_boot
from tests.harness import services
from tests.test_first_boot import STUBS, calls, make_system, run, snapshot, systemctl_stub
from tests.test_k3s_first_boot import (
    AGENT,
    JOIN_TOKEN,
    K3S_BINARY,
    K3S_INSTALLER,
    SERVER,
    _helm_tarball,
    changing_calls,
    every_role,
    on_vm,
    pinned_to_fixtures,
    sha256,
)

NVIDIA_FINGERPRINT = first_boot.NVIDIA_KEY_FINGERPRINT
TOOLKIT = first_boot.NVIDIA_TOOLKIT_VERSION
BRANCH = first_boot.NVIDIA_DRIVER_BRANCH
CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"

# What K3s does when it starts: containerd's config, with a runtime for nvidia-container-runtime
# when the binary exists and default_runtime_name from default-runtime in K3s's config
# (k3s-io/k3s pkg/agent/templates: the v3 template).
RENDER_CONTAINERD = r"""render_containerd() {
  root=$EDGE_BOOTSTRAP_ROOT
  config="$root/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
  mkdir -p "${config%/*}"
  default=$(awk -F': ' '$1 == "default-runtime" { print $2 }' "$root/etc/rancher/k3s/config.yaml" 2>/dev/null)
  {
    echo "version = 3"
    echo "[plugins.'io.containerd.cri.v1.runtime'.containerd]"
    [ -z "$default" ] || echo "  default_runtime_name = \"$default\""
    if [ -x "$root/usr/bin/nvidia-container-runtime" ]; then
      echo "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia']"
      echo "  runtime_type = \"io.containerd.runc.v2\""
      echo "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia'.options]"
      echo "  BinaryName = \"/usr/bin/nvidia-container-runtime\""
    fi
  } > "$config"
}
"""

GPU_STUBS = {
    **STUBS,
    # The toolkit's base package is what puts the runtime binary where K3s looks for it.
    "apt-get": STUBS["apt-get"]
    + r"""for arg; do
  case "$arg" in nvidia-container-toolkit-base=*)
    [ -n "$NO_RUNTIME_BINARY" ] && continue
    mkdir -p "$EDGE_BOOTSTRAP_ROOT/usr/bin"
    printf '#!/bin/sh\n' > "$EDGE_BOOTSTRAP_ROOT/usr/bin/nvidia-container-runtime"
    chmod +x "$EDGE_BOOTSTRAP_ROOT/usr/bin/nvidia-container-runtime" ;;
  esac
done
""",
    "gpg": r"""for last; do :; done
if grep -q nvidia "$last"; then echo "fpr:::::::::${FAKE_NVIDIA_FINGERPRINT}:"
else echo "fpr:::::::::${FAKE_KEY_FINGERPRINT}:"; fi
""",
    "systemctl": RENDER_CONTAINERD
    + systemctl_stub("render_containerd", more_cases='  reboot) touch "$STATE/rebooted" ;;\n'),
    "ubuntu-drivers": r"""echo "ubuntu-drivers $*" >> "$STATE/calls"
[ "$1 $2" = "install --gpgpu" ] || exit 2
branch=${3#nvidia:}
mkdir -p "$STATE/pkg"
for name in "nvidia-headless-no-dkms-$branch" "linux-modules-nvidia-$branch-azure"; do
  printf 1 > "$STATE/pkg/$name"
done
""",
    "modprobe": r"""echo "modprobe $*" >> "$STATE/calls"
[ -z "$DRIVER_NEEDS_REBOOT" ] || { echo "modprobe: ERROR: could not insert 'nvidia': No such device" >&2; exit 1; }
touch "$STATE/driver-loaded"
""",
    "nvidia-smi": r"""echo "nvidia-smi $*" >> "$STATE/calls"
if ! ls "$STATE"/pkg/nvidia-utils-* > /dev/null 2>&1 || [ ! -f "$STATE/driver-loaded" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." ; exit 9
fi
i=0; while [ "$i" -lt "${GPUS_PRESENT:-1}" ]; do echo "GPU $i: Tesla V100-PCIE-16GB (UUID: GPU-$i)"; i=$((i + 1)); done
""",
    "nvidia-ctk": r"""echo "nvidia-ctk $*" >> "$STATE/calls"
for arg; do case "$arg" in --config=*) config=${arg#--config=} ;; esac; done
mkdir -p "$(dirname "$config")"
printf '{"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}\n' > "$config"
""",
    "kubectl": r"""echo "kubectl $*" >> "$STATE/calls"
case "$1" in
  wait)
    case "$*" in *runtimeclass*) [ -z "$NO_RUNTIMECLASS" ] ;; *) [ -z "$NODE_NEVER_READY" ] ;; esac ;;
  apply) mkdir -p "$STATE/applied"; for f; do :; done; cp "$f" "$STATE/applied/$(basename "$f")" ;;
  get)
    case "$2" in
      -f) case "$3" in *gpu-check.yaml) echo "${POD_PHASE:-Succeeded}" ;; *) [ -f "$STATE/secret-created" ] ;; esac ;;
      crd) [ -f "$STATE/crd-installed" ] ;;
    esac ;;
  create) touch "$STATE/secret-created" ;;
  logs)
    n=${POD_SEES_GPUS:-1}; i=0
    [ "$n" -gt 0 ] || echo "Failed to initialize NVML: Unknown Error"
    while [ "$i" -lt "$n" ]; do echo "GPU $i: Tesla V100-PCIE-16GB (UUID: GPU-$i)"; i=$((i + 1)); done ;;
esac
""",
}


@pytest.fixture
def system(tmp_path: Path) -> dict[str, Path]:
    system = make_system(tmp_path, GPU_STUBS)
    fixtures = system["fixtures"]
    k3s = ("#!/bin/sh\n" + K3S_BINARY).encode()
    (fixtures / "k3s").write_bytes(k3s)
    (fixtures / "sha256sum-amd64.txt").write_text(f"{sha256(k3s)}  k3s\n")
    installer = K3S_INSTALLER + '. "$STATE/render-containerd.sh"; render_containerd\n'
    (fixtures / "install.sh").write_text("#!/bin/sh\n" + installer)
    (system["state"] / "render-containerd.sh").write_text(RENDER_CONTAINERD)
    (fixtures / "helm-v3.18.6-linux-amd64.tar.gz").write_bytes(_helm_tarball(tmp_path))
    (fixtures / "gpgkey").write_text("NVIDIA container toolkit key (nvidia)\n")
    return system


def gpu_run(system: dict[str, Path], script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(system, script, FAKE_NVIDIA_FINGERPRINT=env.pop("FAKE_NVIDIA_FINGERPRINT", NVIDIA_FINGERPRINT), **env)


def vm_script(gpus: int = 1) -> str:
    return first_boot.render_script("azureuser", "27.5.1", gpus=gpus)


def server_script(system: dict[str, Path], gpus: int = 1) -> str:
    return pinned_to_fixtures(first_boot.render_script("azureuser", "27.5.1", server=SERVER, gpus=gpus), system)


def index(log: list[str], prefix: str) -> int:
    return next(i for i, c in enumerate(log) if c.startswith(prefix))


# --- virtual-machine mode: Docker only ----------------------------------------------------------


def test_the_driver_the_pinned_toolkit_and_dockers_runtime_are_installed(system) -> None:
    result = gpu_run(system, vm_script())
    assert result.returncode == 0, result.stderr
    log = calls(system)
    assert f"ubuntu-drivers install --gpgpu nvidia:{BRANCH}" in log
    assert f"apt-get install -y -q nvidia-utils-{BRANCH}" in log
    packages = (
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    )
    (install,) = [c for c in log if c.startswith("apt-get install") and "nvidia-container-toolkit=" in c]
    assert install.split()[5:] == [f"{p}={TOOLKIT}" for p in packages]
    assert f"apt-mark hold {' '.join(packages)}" in log
    root = system["root"]
    assert (
        root / "etc/apt/keyrings/nvidia-container-toolkit.asc"
    ).read_text() == "NVIDIA container toolkit key (nvidia)\n"
    assert (root / "etc/apt/sources.list.d/nvidia-container-toolkit.list").read_text() == (
        "deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/amd64 /\n"
    )
    urls = [c.split()[-1] for c in log if c.startswith("curl")]
    assert "https://nvidia.github.io/libnvidia-container/gpgkey" in urls
    daemon = root / "etc/docker/daemon.json"
    assert f"nvidia-ctk runtime configure --runtime=docker --config={daemon}" in log
    assert '"nvidia"' in daemon.read_text()
    assert log.index("systemctl restart docker") > index(log, "nvidia-ctk")
    # The driver first (the toolkit needs it), then the toolkit, then Docker's runtime.
    assert index(log, "ubuntu-drivers") < index(log, "apt-get install -y -q --allow-downgrades nvidia-container")
    assert not [c for c in log if c.startswith(("kubectl", "helm", "install.sh", "systemctl reboot"))]
    marker = on_vm(system, first_boot.MARKER_PATH_ON_VM).read_text()
    assert marker == "docker=27.5.1 user=azureuser gpus=1\n"
    assert (system["state"] / "order").read_text() == ""


def test_a_second_run_on_a_gpu_vm_changes_nothing(system) -> None:
    assert gpu_run(system, vm_script()).returncode == 0
    before_files, before_state, before_calls = snapshot(system["root"]), snapshot(system["state"]), len(calls(system))
    second = gpu_run(system, vm_script())
    assert second.returncode == 0, second.stderr
    rerun = calls(system)[before_calls:]
    assert changing_calls(rerun) == []
    assert not [c for c in rerun if c.startswith(("ubuntu-drivers", "nvidia-ctk", "modprobe", "systemctl restart"))]
    assert snapshot(system["root"]) == before_files
    assert snapshot(system["state"]) == before_state


def test_an_nvidia_key_with_the_wrong_fingerprint_stops_before_apt_trusts_it(system) -> None:
    result = gpu_run(system, vm_script(), FAKE_NVIDIA_FINGERPRINT="0" * 40)
    assert result.returncode != 0
    assert f"NVIDIA's key has fingerprint '{'0' * 40}', expected {NVIDIA_FINGERPRINT}" in result.stderr
    assert not (system["root"] / "etc/apt/keyrings/nvidia-container-toolkit.asc").exists()
    assert not (system["root"] / "etc/apt/sources.list.d/nvidia-container-toolkit.list").exists()
    assert not [c for c in calls(system) if "nvidia-container-toolkit=" in c]
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()


def test_a_driver_that_needs_a_reboot_continues_after_one_reboot(system) -> None:
    script = vm_script()
    first = gpu_run(system, script, DRIVER_NEEDS_REBOOT="1")
    assert first.returncode == 0, first.stderr
    assert "rebooting to load the NVIDIA driver" in first.stdout
    log = calls(system)
    assert log[-1] == "systemctl reboot"  # nothing after it: the reboot ends the run
    assert f"systemctl enable {first_boot.GPU_RERUN_UNIT}" in log
    unit = on_vm(system, f"/etc/systemd/system/{first_boot.GPU_RERUN_UNIT}").read_text()
    script_path = system["root"].parent / "first-boot.sh"
    assert f"ExecStart=/bin/bash {script_path}" in unit.splitlines()
    assert f"ConditionPathExists=!{first_boot.MARKER_PATH_ON_VM}" in unit.splitlines()
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()
    assert not [c for c in log if "nvidia-container-toolkit=" in c]
    # The VM comes back with the driver loaded; the unit runs the script again.
    (system["state"] / "driver-loaded").touch()
    second = gpu_run(system, script, DRIVER_NEEDS_REBOOT="1")
    assert second.returncode == 0, second.stderr
    assert on_vm(system, first_boot.MARKER_PATH_ON_VM).read_text().endswith("gpus=1\n")
    assert calls(system).count("systemctl reboot") == 1


def test_no_gpu_after_the_reboot_fails_loudly_instead_of_rebooting_again(system) -> None:
    assert gpu_run(system, vm_script(), DRIVER_NEEDS_REBOOT="1").returncode == 0
    again = gpu_run(system, vm_script(), DRIVER_NEEDS_REBOOT="1")
    assert again.returncode != 0
    assert f"no GPU is visible after installing the NVIDIA driver {BRANCH} and rebooting" in again.stderr
    assert calls(system).count("systemctl reboot") == 1
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()


def test_fewer_gpus_than_the_size_has_is_an_error(system) -> None:
    result = gpu_run(system, vm_script(gpus=2), GPUS_PRESENT="1")
    assert result.returncode != 0
    assert "the NVIDIA driver shows 1 GPU(s); this VM size has 2" in result.stderr
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()


# --- kubernetes mode: the K3s server ---------------------------------------------------------------


def test_the_server_runs_containerd_on_the_nvidia_runtime_and_a_pod_sees_the_gpu(system) -> None:
    result = gpu_run(system, server_script(system))
    assert result.returncode == 0, result.stderr
    log = calls(system)
    config = yaml.safe_load(on_vm(system, first_boot.K3S_CONFIG_PATH_ON_VM).read_text())
    assert config["default-runtime"] == "nvidia"
    containerd = on_vm(system, CONTAINERD_CONFIG).read_text()
    assert 'default_runtime_name = "nvidia"' in containerd
    assert 'BinaryName = "/usr/bin/nvidia-container-runtime"' in containerd
    # The toolkit is on the disk before K3s starts, or K3s would not find it.
    assert index(log, "apt-get install -y -q --allow-downgrades nvidia-container") < log.index("install.sh server")
    assert "kubectl wait --for=create runtimeclass/nvidia --timeout=120s" in log
    assert f"kubectl apply -f {on_vm(system, '/etc/edge-training/gpu-check.yaml')}" in log
    assert "kubectl logs --namespace edge-training pod/edge-training-gpu-check" in log
    # The GPU is proven before Arc is onboarded and before either marker.
    assert index(log, "kubectl logs") < index(log, "helm upgrade")
    assert "a pod sees 1 GPU(s)" in result.stdout
    assert (
        on_vm(system, first_boot.MARKER_PATH_ON_VM).read_text()
        == "docker=27.5.1 user=azureuser k3s=v1.36.2+k3s1 role=server gpus=1\n"
    )
    assert (system["state"] / "order").read_text() == ""


def test_the_gpu_check_pod_is_what_the_script_applies_and_valid_for_the_pinned_kubernetes(system) -> None:
    assert gpu_run(system, server_script(system)).returncode == 0
    (pod,) = yaml.safe_load_all((system["state"] / "applied" / "gpu-check.yaml").read_text())
    assert pod == cluster_manifests.gpu_check_pod("edge-training")
    kubernetes_validate.validate(pod, first_boot.K3S_KUBERNETES_MINOR, strict=True)
    spec = pod["spec"]
    assert spec["runtimeClassName"] == "nvidia" and spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["command"] == ["nvidia-smi", "-L"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in container["env"]
    # Pod Security "restricted", like the jobs beside it.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"POD_PHASE": "Failed", "POD_SEES_GPUS": "0"},
            "no GPU visible to a pod: the check pod ended Failed and listed 0 of 1",
        ),
        ({"POD_SEES_GPUS": "0"}, "no GPU visible to a pod: the check pod ended Succeeded and listed 0 of 1"),
        ({"NO_RUNTIMECLASS": "1"}, "K3s declared no RuntimeClass nvidia within 120s"),
        ({"NO_RUNTIME_BINARY": "1"}, "K3s found no NVIDIA runtime"),
    ],
)
def test_a_gpu_a_pod_cannot_see_fails_the_first_boot_before_arc(system, env, message) -> None:
    result = gpu_run(system, server_script(system), **env)
    assert result.returncode != 0
    assert message in result.stderr
    assert not [c for c in calls(system) if c.startswith("helm upgrade")]
    assert not on_vm(system, first_boot.CLUSTER_READY_MARKER).exists()
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()


def test_a_gpu_check_pod_that_never_finishes_fails_with_its_description(system) -> None:
    script = server_script(system).replace(
        "deadline=$((SECONDS + 600))  # the first pull", "deadline=$((SECONDS + 0))  #"
    )
    result = gpu_run(system, script, POD_PHASE="Pending")
    assert result.returncode != 0
    assert "the GPU check pod did not finish within 600s (phase 'Pending')" in result.stderr
    assert any(c.startswith("kubectl describe -f") for c in calls(system))


def test_a_containerd_whose_default_runtime_is_not_nvidia_is_refused(system) -> None:
    # K3s's config without default-runtime: the runtime is found, but jobs would not get it.
    script = server_script(system).replace("default-runtime: nvidia\n", "")
    result = gpu_run(system, script)
    assert result.returncode != 0
    assert "containerd's default runtime is not nvidia" in result.stderr


def test_the_gpu_server_rerun_changes_nothing(system) -> None:
    script = server_script(system)
    assert gpu_run(system, script).returncode == 0
    before_files, before_calls = snapshot(system["root"]), len(calls(system))
    second = gpu_run(system, script)
    assert second.returncode == 0, second.stderr
    rerun = calls(system)[before_calls:]
    assert changing_calls(rerun) == []
    assert not [c for c in rerun if c.startswith(("kubectl logs", "ubuntu-drivers", "nvidia-ctk"))]
    assert snapshot(system["root"]) == before_files


# --- an agent ---------------------------------------------------------------------------------------


def test_an_agent_gets_the_driver_and_the_default_runtime_and_no_pod_check(system) -> None:
    script = pinned_to_fixtures(first_boot.render_script("azureuser", "27.5.1", agent=AGENT, gpus=4), system)
    result = gpu_run(system, script, GPUS_PRESENT="4")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(on_vm(system, first_boot.K3S_CONFIG_PATH_ON_VM).read_text())
    assert config == {"token": JOIN_TOKEN, "server": AGENT.server_url, "default-runtime": "nvidia"}
    assert 'default_runtime_name = "nvidia"' in on_vm(system, CONTAINERD_CONFIG).read_text()
    assert not [c for c in calls(system) if c.startswith("kubectl")]
    assert on_vm(system, first_boot.MARKER_PATH_ON_VM).read_text().endswith("role=agent gpus=4\n")


# --- rendering --------------------------------------------------------------------------------------


def test_rendered_gpu_scripts_pass_shellcheck(tmp_path: Path) -> None:
    assert services.shellcheck(every_role(gpus=2), tmp_path) == ""


def test_pinned_gpu_sources_are_what_the_script_installs() -> None:
    script = first_boot.render_script("azureuser", "27.5.1", server=SERVER, gpus=1)
    lines = script.splitlines()
    for line in (
        'GPU_COUNT="1"',
        f'NVIDIA_DRIVER_BRANCH="{BRANCH}"',
        f'NVIDIA_TOOLKIT_VERSION="{TOOLKIT}"',
        f'NVIDIA_KEY_FINGERPRINT="{NVIDIA_FINGERPRINT}"',
        'GPU_CHECK_NAMESPACE="edge-training"',
    ):
        assert line in lines
    assert "@" not in "".join(line for line in lines if line.startswith(("GPU_", "NVIDIA_")))
    assert len(first_boot.cloud_init(script).encode()) <= first_boot.CUSTOM_DATA_MAX_BYTES
    # A CPU VM's script carries the functions but never calls them.
    assert 'GPU_COUNT="0"' in first_boot.render_script("azureuser", "27.5.1").splitlines()


@pytest.mark.parametrize("gpus", [-1, 17, True, "1"])
def test_a_gpu_count_that_is_not_one_is_refused(gpus: object) -> None:
    with pytest.raises(first_boot.FirstBootError, match="is not a number of GPUs"):
        first_boot.render_script("azureuser", "27.5.1", gpus=gpus)  # type: ignore[arg-type]


def test_k3s_config_names_the_nvidia_runtime_only_with_gpus() -> None:
    assert "default-runtime" not in yaml.safe_load(first_boot.k3s_config(JOIN_TOKEN))
    assert yaml.safe_load(first_boot.k3s_config(JOIN_TOKEN, gpus=1))["default-runtime"] == "nvidia"
