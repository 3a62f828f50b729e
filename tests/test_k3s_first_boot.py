"""The K3s server and agent first boot, run for real in a throwaway root (see test_first_boot.py).

Downloads come from fixtures: a K3s "binary" and install.sh that record how they were run, the
release's sha256sum file, and a real tar.gz holding a Helm that records its calls. The checksums
are verified by the script with the real sha256sum; the tests only swap the pinned constants for
the fixtures' hashes. kubectl and helm keep cluster state (release installed, Secret created, CRD
present) in the state directory.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edge import cluster_manifests, first_boot
from tests.harness import services
from tests.test_first_boot import PRELUDE, STUBS, calls, make_system, run, snapshot

SUBSCRIPTION = "6f1c7a8e-2b3d-4c5e-9f60-718293a4b5c6"
TENANT = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
JOIN_TOKEN = "K10-join-token-8d7f6e5a4b3c2d1e"
SERVER_URL = "https://10.20.0.4:6443"


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY_PEM = _pem(KEY, serialization.PrivateFormat.TraditionalOpenSSL)
# Lines of the key's body: any one of them anywhere means the key leaked.
KEY_LINES = [line for line in PRIVATE_KEY_PEM.splitlines() if "-----" not in line]

ARC = first_boot.ArcOnboarding(
    subscription_id=SUBSCRIPTION,
    tenant_id=TENANT,
    resource_group="rg-edge-dev",
    cluster_name="edge-dev-k3s",
    location="westeurope",
    private_key_pem=PRIVATE_KEY_PEM,
)
INSTANCE_TYPES = [cluster_manifests.InstanceTypeSpec("small", "500m", "2Gi", "2", "6Gi")]
MANIFESTS = cluster_manifests.to_yaml(cluster_manifests.cluster_manifests("edge-training", INSTANCE_TYPES))
SERVER = first_boot.K3sServer(join_token=JOIN_TOKEN, arc=ARC, manifests_yaml=MANIFESTS)
AGENT = first_boot.K3sAgent(server_url=SERVER_URL, join_token=JOIN_TOKEN)

K3S_BINARY = (
    PRELUDE
    + r"""echo "k3s $*" >> "$STATE/calls"
[ "$1" != --version ] || { echo "k3s version v1.36.2+k3s1 (01b6f04a)"; echo "go version go1.24.4"; }
"""
)

# Stands in for K3s's installer: what it was asked for, and the service it would set up.
K3S_INSTALLER = (
    PRELUDE
    + r"""echo "install.sh $*" >> "$STATE/calls"
[ "$INSTALL_K3S_SKIP_DOWNLOAD" = true ] || { echo "would download K3s itself" >&2; exit 1; }
service=k3s; [ "$1" = server ] || service="k3s-$1"
touch "$STATE/enabled.$service" "$STATE/active.$service"
"""
)

# Helm as the script uses it: version, list (the release, once installed), upgrade --install.
HELM = (
    PRELUDE
    + r"""echo "helm $*" >> "$STATE/calls"
case "$1" in
  version) echo v3.18.6 ;;
  list)
    if [ -f "$STATE/arc-release" ]; then
      printf '[{"name":"azure-arc","namespace":"azure-arc-release","status":"deployed","chart":"%s"}]\n' \
        "$(cat "$STATE/arc-release")"
    else echo '[]'; fi ;;
  upgrade)
    version=""; values=""
    while [ $# -gt 0 ]; do
      case "$1" in --version) version=$2 ;; --values) values=$2 ;; esac; shift
    done
    # What Helm received, kept apart from the logs that the leak checks read.
    stat -c %a "$values" > "$STATE/received-values-mode"
    cp "$values" "$STATE/received-values"
    [ -z "$HELM_FAILS" ] || { echo "Error: context deadline exceeded" >&2; exit 1; }
    echo "azure-arc-k8sagents-$version" > "$STATE/arc-release" ;;
esac
"""
)

KUBECTL = r"""echo "kubectl $*" >> "$STATE/calls"
case "$1" in
  wait) [ -z "$NODE_NEVER_READY" ] ;;
  apply) mkdir -p "$STATE/applied"; for f; do :; done; cp "$f" "$STATE/applied/$(basename "$f")" ;;
  get)
    case "$2" in
      -f) [ -f "$STATE/secret-created" ] ;;
      crd) [ -f "$STATE/crd-installed" ] ;;
    esac ;;
  create) touch "$STATE/secret-created" ;;
esac
"""


def _helm_tarball(tmp: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = ("#!/bin/sh\n" + HELM).encode()
        info = tarfile.TarInfo("linux-amd64/helm")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        archive.addfile(info, io.BytesIO(data))
        readme = b"Helm\n"
        info = tarfile.TarInfo("linux-amd64/README.md")
        info.size, info.mtime = len(readme), 0
        archive.addfile(info, io.BytesIO(readme))
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def system(tmp_path: Path) -> dict[str, Path]:
    system = make_system(tmp_path, {**STUBS, "kubectl": KUBECTL})
    fixtures = system["fixtures"]
    k3s = ("#!/bin/sh\n" + K3S_BINARY).encode()
    (fixtures / "k3s").write_bytes(k3s)
    (fixtures / "sha256sum-amd64.txt").write_text(
        f"{sha256(b'airgap images')}  k3s-airgap-images-amd64.tar.zst\n{sha256(k3s)}  k3s\n"
    )
    (fixtures / "install.sh").write_text("#!/bin/sh\n" + K3S_INSTALLER)
    (fixtures / "helm-v3.18.6-linux-amd64.tar.gz").write_bytes(_helm_tarball(tmp_path))
    return system


def pinned_to_fixtures(script: str, system: dict[str, Path]) -> str:
    """The script with the pinned hashes swapped for the fixtures' (nothing else changes)."""
    fixtures = system["fixtures"]
    for pinned, fixture in (
        (first_boot.K3S_SHA256, "k3s"),
        (first_boot.K3S_INSTALLER_SHA256, "install.sh"),
        (first_boot.HELM_SHA256, "helm-v3.18.6-linux-amd64.tar.gz"),
    ):
        assert script.count(pinned) == 1, pinned
        script = script.replace(pinned, sha256((fixtures / fixture).read_bytes()))
    return script


def server_script(system: dict[str, Path], server: first_boot.K3sServer = SERVER) -> str:
    return pinned_to_fixtures(first_boot.render_script("azureuser", "27.5.1", server=server), system)


def on_vm(system: dict[str, Path], path: str) -> Path:
    return system["root"] / path.lstrip("/")


def changing_calls(log: list[str]) -> list[str]:
    return [
        c
        for c in log
        if c.startswith(("apt-get", "usermod", "curl", "apt-mark", "install.sh", "kubectl apply", "kubectl create"))
        or c.startswith(("helm upgrade", "systemctl enable", "systemctl start", "systemctl restart"))
        or c == "systemctl daemon-reload"
    ]


# --- the server -------------------------------------------------------------------------------


def test_the_server_installs_verified_k3s_with_its_installer_at_the_same_tag(system) -> None:
    result = run(system, server_script(system))
    assert result.returncode == 0, result.stderr
    log = calls(system)
    assert "curl -fsSL --proto =https --retry 5 --retry-connrefused -o" in " ".join(log)
    urls = [c.split()[-1] for c in log if c.startswith("curl")]
    assert "https://github.com/k3s-io/k3s/releases/download/v1.36.2%2Bk3s1/k3s" in urls
    assert "https://github.com/k3s-io/k3s/releases/download/v1.36.2%2Bk3s1/sha256sum-amd64.txt" in urls
    assert "https://raw.githubusercontent.com/k3s-io/k3s/v1.36.2%2Bk3s1/install.sh" in urls
    assert "https://get.helm.sh/helm-v3.18.6-linux-amd64.tar.gz" in urls
    assert "install.sh server" in log
    installed = on_vm(system, "/usr/local/bin/k3s")
    assert installed.read_bytes() == (system["fixtures"] / "k3s").read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    config = on_vm(system, first_boot.K3S_CONFIG_PATH_ON_VM)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert yaml.safe_load(config.read_text()) == {
        "token": JOIN_TOKEN,
        "write-kubeconfig-mode": "0600",
        "disable": ["traefik", "servicelb"],
    }
    assert "systemctl is-active --quiet k3s" in log


def test_the_server_installs_the_pinned_arc_chart_with_the_values_from_a_0600_file(system) -> None:
    result = run(system, server_script(system))
    assert result.returncode == 0, result.stderr
    (upgrade,) = [c for c in calls(system) if c.startswith("helm upgrade")]
    values_path = str(on_vm(system, first_boot.ARC_VALUES_PATH_ON_VM))
    assert upgrade.split() == [
        "helm",
        "upgrade",
        "--install",
        "azure-arc",
        "oci://mcr.microsoft.com/azurearck8s/batch1/stable/v2/azure-arc-k8sagents",
        "--version",
        "1.31.3",
        "--namespace",
        "azure-arc-release",
        "--create-namespace",
        "--values",
        values_path,
        "--wait",
        "--timeout",
        "600s",
    ]
    state = system["state"]
    assert (state / "received-values-mode").read_text().strip() == "600"
    received = yaml.safe_load((state / "received-values").read_text())  # JSON is YAML, as Helm reads it
    assert received == first_boot.arc_helm_values(ARC)
    assert received["global"]["onboardingPrivateKey"] == PRIVATE_KEY_PEM
    assert received["global"]["kubernetesDistro"] == "k3s"
    assert received["global"]["kubernetesInfra"] == "azure_stack_hub"
    # Auto-upgrade on by default, as `az connectedk8s connect` leaves it (arcAgentAutoUpgrade).
    assert received["systemDefaultValues"]["azureArcAgents"] == {"autoUpdate": True}
    assert not Path(values_path).exists()
    assert stat.S_IMODE(Path(values_path).parent.stat().st_mode) == 0o700


def test_the_onboarding_key_and_join_token_are_in_no_argv_environment_or_log(system) -> None:
    result = run(system, server_script(system))
    assert result.returncode == 0, result.stderr
    records = {
        "argv of every child": (system["state"] / "calls").read_text(),
        "environment of every child": (system["state"] / "env").read_text(),
        "stdout": result.stdout,
        "stderr": result.stderr,
    }
    assert "helm upgrade" in records["argv of every child"]  # the recordings are real
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in records["environment of every child"]
    for where, text in records.items():
        assert JOIN_TOKEN not in text, where
        assert not [line for line in KEY_LINES if line in text], where
    # On the VM's disk, once the script is done: the token only in K3s's own 0600 config, the key nowhere.
    for path in system["root"].rglob("*"):
        if path.is_file():
            content = path.read_text(errors="replace")
            assert not [line for line in KEY_LINES if line in content], path
            if JOIN_TOKEN in content:
                assert path == on_vm(system, first_boot.K3S_CONFIG_PATH_ON_VM)


def test_the_key_file_is_removed_even_when_helm_fails(system) -> None:
    result = run(system, server_script(system), HELM_FAILS="1")
    assert result.returncode != 0
    assert (system["state"] / "received-values-mode").read_text().strip() == "600"  # it existed
    assert not on_vm(system, first_boot.ARC_VALUES_PATH_ON_VM).exists()
    assert not on_vm(system, first_boot.CLUSTER_READY_MARKER).exists()
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()
    assert not [line for line in KEY_LINES if line in result.stdout + result.stderr]


def test_the_server_applies_the_namespace_and_volumes_and_creates_the_secret_once(system) -> None:
    assert run(system, server_script(system)).returncode == 0
    log = calls(system)
    manifests = on_vm(system, "/etc/edge-training/manifests")
    assert f"kubectl apply -f {manifests}/cluster.yaml" in log
    assert f"kubectl create -f {manifests}/create-once.yaml" in log
    applied = list(yaml.safe_load_all((system["state"] / "applied" / "cluster.yaml").read_text()))
    assert {d["kind"] for d in applied} == {"Namespace", "DaemonSet", "PersistentVolume", "PersistentVolumeClaim"}
    once = list(yaml.safe_load_all((manifests / "create-once.yaml").read_text()))
    assert [d["kind"] for d in once] == ["Secret"]
    instance_types = list(yaml.safe_load_all((manifests / "instance-types.yaml").read_text()))
    assert [d["metadata"]["name"] for d in instance_types] == ["small"]
    # The namespace exists before the agents are onboarded (the compute attach needs it).
    assert log.index(f"kubectl apply -f {manifests}/cluster.yaml") < next(
        i for i, c in enumerate(log) if c.startswith("helm upgrade")
    )
    # Changed instance types are applied again on a rerun; the filled Secret is not recreated.
    bigger = [*INSTANCE_TYPES, cluster_manifests.InstanceTypeSpec("large", "2", "8Gi", "4", "12Gi")]
    changed = first_boot.K3sServer(
        JOIN_TOKEN, ARC, cluster_manifests.to_yaml(cluster_manifests.cluster_manifests("edge-training", bigger))
    )
    before = len(calls(system))
    assert run(system, server_script(system, changed)).returncode == 0
    rerun = calls(system)[before:]
    assert f"kubectl apply -f {manifests}/cluster.yaml" in rerun
    assert f"kubectl create -f {manifests}/create-once.yaml" not in rerun
    assert f"systemctl restart --no-block {first_boot.INSTANCE_TYPES_UNIT}" in rerun


def test_the_server_writes_the_cluster_ready_and_first_boot_markers_last(system) -> None:
    result = run(system, server_script(system))
    assert result.returncode == 0, result.stderr
    assert on_vm(system, first_boot.CLUSTER_READY_MARKER).read_text() == "k3s=v1.36.2+k3s1 arc=1.31.3\n"
    assert (
        on_vm(system, first_boot.MARKER_PATH_ON_VM).read_text()
        == "docker=27.5.1 user=azureuser k3s=v1.36.2+k3s1 role=server\n"
    )
    # Issue 12: nothing ran once either marker existed, so neither vouches for unfinished work.
    assert (system["state"] / "order").read_text() == ""


def test_a_node_that_never_gets_ready_fails_before_arc_and_leaves_no_marker(system) -> None:
    script = server_script(system).replace("SECONDS + 600", "SECONDS + 0")
    result = run(system, script, NODE_NEVER_READY="1")
    assert result.returncode != 0
    assert "K3s node was not Ready within 600s" in result.stderr
    assert not any(c.startswith("helm upgrade") for c in calls(system))
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()


def test_the_server_rerun_changes_nothing(system) -> None:
    script = server_script(system)
    assert run(system, script).returncode == 0
    before_files, before_state, before_calls = snapshot(system["root"]), snapshot(system["state"]), len(calls(system))
    second = run(system, script)
    assert second.returncode == 0, second.stderr
    rerun = calls(system)[before_calls:]
    assert changing_calls(rerun) == []
    assert any(c.startswith("helm list") for c in rerun)  # it looked, and found the agents deployed
    assert snapshot(system["root"]) == before_files
    assert snapshot(system["state"]) == before_state


PINNED_ARC = first_boot.ArcOnboarding(**{**ARC.__dict__, "auto_upgrade": False, "chart_version": "1.31.3"})


def test_pinned_arc_agents_at_another_version_are_put_back_on_the_next_run(system) -> None:
    pinned = first_boot.K3sServer(JOIN_TOKEN, PINNED_ARC, MANIFESTS)
    assert run(system, server_script(system, pinned)).returncode == 0
    assert (system["state"] / "received-values").read_text().count('"autoUpdate": false') == 1
    (system["state"] / "arc-release").write_text("azure-arc-k8sagents-1.30.0\n")
    before = len(calls(system))
    assert run(system, server_script(system, pinned)).returncode == 0
    assert [c for c in calls(system)[before:] if c.startswith("helm upgrade")]
    assert not on_vm(system, first_boot.ARC_VALUES_PATH_ON_VM).exists()


def test_auto_upgraded_arc_agents_are_not_moved_back(system) -> None:
    assert run(system, server_script(system)).returncode == 0
    (system["state"] / "arc-release").write_text("azure-arc-k8sagents-1.33.0\n")  # Azure upgraded them
    before = len(calls(system))
    assert run(system, server_script(system)).returncode == 0
    assert not [c for c in calls(system)[before:] if c.startswith("helm upgrade")]


def test_a_rotated_onboarding_key_installs_the_agents_again_and_only_its_digest_stays(system) -> None:
    assert run(system, server_script(system)).returncode == 0
    rotated_pem = _pem(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), serialization.PrivateFormat.TraditionalOpenSSL
    )
    rotated = first_boot.K3sServer(
        JOIN_TOKEN, first_boot.ArcOnboarding(**{**ARC.__dict__, "private_key_pem": rotated_pem}), MANIFESTS
    )
    before = len(calls(system))
    assert run(system, server_script(system, rotated)).returncode == 0
    assert [c for c in calls(system)[before:] if c.startswith("helm upgrade")]
    received = yaml.safe_load((system["state"] / "received-values").read_text())
    assert received["global"]["onboardingPrivateKey"] == rotated_pem
    digest = on_vm(system, "/var/lib/edge-training/arc-onboarding-key.sha256").read_text().strip()
    assert digest == hashlib.sha256(rotated_pem.encode()).hexdigest()
    before = len(calls(system))
    assert run(system, server_script(system, rotated)).returncode == 0
    assert not [c for c in calls(system)[before:] if c.startswith("helm upgrade")]
    # Agents Azure has upgraded keep their version when a new key is installed.
    (system["state"] / "arc-release").write_text("azure-arc-k8sagents-1.33.0\n")
    again = first_boot.K3sServer(
        JOIN_TOKEN, first_boot.ArcOnboarding(**{**ARC.__dict__, "private_key_pem": PRIVATE_KEY_PEM}), MANIFESTS
    )
    before = len(calls(system))
    assert run(system, server_script(system, again)).returncode == 0
    (upgrade,) = [c for c in calls(system)[before:] if c.startswith("helm upgrade")]
    assert "--version 1.33.0" in upgrade


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("k3s", "K3s v1.36.2+k3s1 has SHA-256"),
        ("sha256sum-amd64.txt", "the release's sha256sum-amd64.txt lists"),
        ("install.sh", "K3s's install.sh at v1.36.2+k3s1 has SHA-256"),
        ("helm-v3.18.6-linux-amd64.tar.gz", "Helm v3.18.6 has SHA-256"),
    ],
)
def test_a_download_that_does_not_match_its_pinned_checksum_stops_the_script(system, tamper, message) -> None:
    script = server_script(system)  # pinned to the good fixtures
    path = system["fixtures"] / tamper
    if tamper == "sha256sum-amd64.txt":
        path.write_text(f"{'0' * 64}  k3s\n")
    else:
        path.write_bytes(path.read_bytes() + b"\n# tampered\n")
    result = run(system, script)
    assert result.returncode != 0
    assert message in result.stderr
    log = calls(system)
    assert not any(c.startswith("helm upgrade") for c in log)
    assert not on_vm(system, first_boot.MARKER_PATH_ON_VM).exists()
    if tamper != "helm-v3.18.6-linux-amd64.tar.gz":
        assert "install.sh server" not in log
        assert not on_vm(system, "/usr/local/bin/k3s").exists()
    else:
        assert not on_vm(system, "/usr/local/bin/helm").exists()


# --- the InstanceTypes unit ---------------------------------------------------------------------


def test_the_instance_types_unit_waits_for_the_crd_then_applies(system) -> None:
    assert run(system, server_script(system)).returncode == 0
    log = calls(system)
    unit = on_vm(system, f"/etc/systemd/system/{first_boot.INSTANCE_TYPES_UNIT}").read_text()
    assert "Restart=on-failure" in unit and "StartLimitIntervalSec=0" in unit
    assert "ExecStart=/bin/bash /opt/edge-training/apply-instance-types.sh" in unit
    assert f"systemctl enable {first_boot.INSTANCE_TYPES_UNIT}" in log
    script = on_vm(system, "/opt/edge-training/apply-instance-types.sh")
    env = {
        "PATH": f"{system['stubs']}:/usr/bin:/bin",
        "EDGE_BOOTSTRAP_ROOT": str(system["root"]),
        "STATE": str(system["state"]),
    }

    def apply_instance_types() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)

    before = len(calls(system))
    waiting = apply_instance_types()
    assert waiting.returncode != 0  # systemd runs it again a minute later
    assert "waiting for the Azure ML extension to install instancetypes.amlarc.azureml.com" in waiting.stderr
    assert not [c for c in calls(system)[before:] if c.startswith("kubectl apply")]
    (system["state"] / "crd-installed").touch()
    assert apply_instance_types().returncode == 0
    after = calls(system)[before:]
    assert "kubectl wait --for=condition=Established crd/instancetypes.amlarc.azureml.com --timeout=60s" in after
    instance_types = on_vm(system, "/etc/edge-training/manifests/instance-types.yaml")
    assert f"kubectl apply -f {instance_types}" in after


# --- an agent -------------------------------------------------------------------------------------


def test_an_agent_joins_with_the_token_in_k3s_config_and_no_arc(system) -> None:
    script = pinned_to_fixtures(first_boot.render_script("azureuser", "27.5.1", agent=AGENT), system)
    result = run(system, script)
    assert result.returncode == 0, result.stderr
    log = calls(system)
    assert "install.sh agent" in log
    assert "systemctl is-active --quiet k3s-agent" in log
    assert not any(c.startswith(("helm", "kubectl")) for c in log)
    config = on_vm(system, first_boot.K3S_CONFIG_PATH_ON_VM)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert yaml.safe_load(config.read_text()) == {"token": JOIN_TOKEN, "server": SERVER_URL}
    env = (system["state"] / "env").read_text()
    assert JOIN_TOKEN not in env and JOIN_TOKEN not in "\n".join(log) + result.stdout + result.stderr
    assert not on_vm(system, first_boot.CLUSTER_READY_MARKER).exists()
    assert (
        on_vm(system, first_boot.MARKER_PATH_ON_VM).read_text()
        == "docker=27.5.1 user=azureuser k3s=v1.36.2+k3s1 role=agent\n"
    )
    before_files, before_calls = snapshot(system["root"]), len(calls(system))
    assert run(system, script).returncode == 0
    assert changing_calls(calls(system)[before_calls:]) == []
    assert snapshot(system["root"]) == before_files


def test_a_changed_join_token_restarts_the_agent(system) -> None:
    assert (
        run(system, pinned_to_fixtures(first_boot.render_script("azureuser", "27.5.1", agent=AGENT), system)).returncode
        == 0
    )
    rotated = first_boot.K3sAgent(SERVER_URL, "K10-rotated-token-0123456789")
    before = len(calls(system))
    assert (
        run(
            system, pinned_to_fixtures(first_boot.render_script("azureuser", "27.5.1", agent=rotated), system)
        ).returncode
        == 0
    )
    rerun = calls(system)[before:]
    assert "systemctl restart k3s-agent" in rerun
    assert not any(c.startswith("install.sh") for c in rerun)
    assert "K10-rotated-token-0123456789" in on_vm(system, first_boot.K3S_CONFIG_PATH_ON_VM).read_text()


# --- rendering ------------------------------------------------------------------------------------


def every_role(**options: Any) -> dict[str, str]:
    """The first-boot script of each role (Docker VM, K3s server, K3s agent), rendered with `options`."""
    return {
        role: first_boot.render_script(
            "azureuser",
            "27.5.1",
            server=SERVER if role == "server" else None,
            agent=AGENT if role == "agent" else None,
            **options,
        )
        for role in ("docker", "server", "agent")
    }


@pytest.mark.parametrize("gpus", [0, 2])
def test_custom_data_is_written_byte_for_byte_as_pyyamls_own_emitter_writes_it(gpus: int) -> None:
    """cloud_init uses libyaml's emitter for speed; a byte of difference in custom data would
    replace every VM on the next `pulumi up`, so it must write exactly what PyYAML's does."""
    for role, script in every_role(gpus=gpus).items():
        custom_data = first_boot.cloud_init(script)
        document = yaml.safe_load(custom_data)
        assert base64.b64decode(document["write_files"][0]["content"]).decode() == script, role
        pure = "#cloud-config\n" + yaml.dump(document, Dumper=yaml.SafeDumper, sort_keys=False)
        assert custom_data == pure, role


def test_rendered_scripts_pass_shellcheck(tmp_path: Path) -> None:
    assert services.shellcheck(every_role(), tmp_path) == ""


def test_a_script_with_secrets_is_written_root_only_and_fits_in_custom_data() -> None:
    script = first_boot.render_script("azureuser", "27.5.1", server=SERVER)
    assert first_boot.holds_secrets(script)
    document = yaml.safe_load(first_boot.cloud_init(script))
    assert document["write_files"][0]["permissions"] == "0700"
    assert len(first_boot.cloud_init(script).encode()) <= first_boot.CUSTOM_DATA_MAX_BYTES
    with pytest.raises(first_boot.FirstBootError, match="customData takes at most 65535"):
        first_boot.custom_data(script + "#" * first_boot.CUSTOM_DATA_MAX_BYTES)


def test_secrets_stay_out_of_reprs() -> None:
    for value in (ARC, SERVER, AGENT):
        text = repr(value)
        assert JOIN_TOKEN not in text and not [line for line in KEY_LINES if line in text]


def _bad(**changes: object) -> first_boot.K3sServer:
    arc_fields = {k: v for k, v in changes.items() if k in first_boot.ArcOnboarding.__dataclass_fields__}
    server_fields = {k: v for k, v in changes.items() if k not in arc_fields}
    arc = first_boot.ArcOnboarding(**{**ARC.__dict__, **arc_fields})
    return first_boot.K3sServer(**{**SERVER.__dict__, "arc": arc, **server_fields})


PKCS8_PEM = _pem(KEY, serialization.PrivateFormat.PKCS8)


def _der(tag: int, body: bytes) -> bytes:
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8 or 1, "big")
    return bytes([tag]) + (size if len(body) < 0x80 else bytes([0x80 | len(size)]) + size) + body


def _damaged(number: str) -> str:
    """The test key as PKCS#1 PEM, well-formed, with one of its numbers off by two. Written by hand
    (RFC 8017, A.1.2, RSAPrivateKey): cryptography refuses to serialize some of these."""
    private = KEY.private_numbers()
    values = {"version": 0, "n": private.public_numbers.n, "e": private.public_numbers.e}
    values |= {k: getattr(private, k) for k in ("d", "p", "q", "dmp1", "dmq1", "iqmp")}
    values[number] += 2
    der = _der(0x30, b"".join(_der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big")) for v in values.values()))
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----", ""])


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (_bad(subscription_id="not-a-guid"), "arc.subscription_id 'not-a-guid' is not a GUID"),
        (_bad(tenant_id=""), "arc.tenant_id '' is not a GUID"),
        (_bad(location="West Europe"), "arc.location 'West Europe' is not a region name"),
        (_bad(cluster_name="-bad"), "arc.cluster_name '-bad' is not a connected cluster name"),
        (_bad(resource_group=""), "arc.resource_group '' is not a resource group name"),
        (_bad(azure_environment="AzureStackCloud"), "arc.azure_environment 'AzureStackCloud' is not one of"),
        (_bad(private_key_pem=PKCS8_PEM), r'arc.private_key_pem is not a PKCS#1 PEM \("-----BEGIN RSA PRIVATE KEY'),
        (
            _bad(private_key_pem="-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"),
            "arc.private_key_pem does not parse",
        ),
        # The key is loaded without OpenSSL's validation (first_boot._check_arc): any number out of
        # step with the others is still refused.
        *[
            (_bad(private_key_pem=_damaged(number)), "arc.private_key_pem is not a valid RSA key")
            for number in ("n", "e", "p", "d", "dmp1", "dmq1", "iqmp")
        ],
        (_bad(join_token="short"), "server.join_token must be 16 to 256 printable ASCII"),
        (_bad(join_token="has a space in the token"), "server.join_token must be 16 to 256 printable ASCII"),
        (_bad(manifests_yaml="a: [b"), "server.manifests_yaml is not YAML"),
        (_bad(manifests_yaml="- just\n- a list\n"), "server.manifests_yaml document 0 is not a Kubernetes object"),
        (
            _bad(
                manifests_yaml=MANIFESTS
                + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: leak, namespace: x}\nstringData: {k: v}\n"
            ),
            "Secret 'leak' carries data",
        ),
        (
            _bad(manifests_yaml="apiVersion: amlarc.azureml.com/v1alpha1\nkind: InstanceType\nmetadata: {name: a}\n"),
            "server.manifests_yaml has nothing to apply",
        ),
    ],
)
def test_bad_server_input_is_one_clear_error_without_the_secret(server, message) -> None:
    with pytest.raises(first_boot.FirstBootError, match=message) as raised:
        first_boot.render_script("azureuser", "27.5.1", server=server)
    text = str(raised.value)
    assert not [line for line in KEY_LINES if line in text] and JOIN_TOKEN not in text


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        (first_boot.K3sAgent("http://10.20.0.4:6443", JOIN_TOKEN), "agent.server_url 'http://10.20.0.4:6443' is not"),
        (first_boot.K3sAgent("https://10.20.0.4", JOIN_TOKEN), "is not https://<host>:<port>"),
        (first_boot.K3sAgent("https://10.20.0.4:6443; reboot", JOIN_TOKEN), "is not https://<host>:<port>"),
        (first_boot.K3sAgent(SERVER_URL, "line\nbreak-in-the-token"), "agent.join_token must be"),
    ],
)
def test_bad_agent_input_is_one_clear_error(agent, message) -> None:
    with pytest.raises(first_boot.FirstBootError, match=message):
        first_boot.render_script("azureuser", "27.5.1", agent=agent)


def test_a_vm_is_not_both_server_and_agent() -> None:
    with pytest.raises(first_boot.FirstBootError, match="either the K3s server or a K3s agent"):
        first_boot.render_script("azureuser", "27.5.1", server=SERVER, agent=AGENT)


def test_a_heredoc_terminator_inside_a_secret_cannot_end_it_early() -> None:
    server = first_boot.K3sServer(JOIN_TOKEN, ARC, MANIFESTS + "---\n# EDGE_TRAINING_EOF\n")
    first_boot.render_script("azureuser", "27.5.1", server=server)  # a comment mentioning it is harmless
    with pytest.raises(first_boot.FirstBootError, match="contains the line EDGE_TRAINING_EOF"):
        first_boot._writer("write_x", '"$1"', "a\nEDGE_TRAINING_EOF\nb")


def test_pinned_versions_are_what_the_script_installs() -> None:
    script = first_boot.render_script("azureuser", "27.5.1", server=SERVER)
    for line in (
        f'K3S_VERSION="{first_boot.K3S_VERSION}"',
        f'K3S_SHA256="{first_boot.K3S_SHA256}"',
        f'HELM_VERSION="{first_boot.HELM_VERSION}"',
        f'HELM_SHA256="{first_boot.HELM_SHA256}"',
        f'ARC_CHART_VERSION="{first_boot.ARC_CHART_VERSION}"',
    ):
        assert line in script.splitlines()
    assert json.dumps(first_boot.arc_helm_values(ARC)) in script  # one line: no heredoc line can end it
    assert Path(first_boot.ARC_VALUES_PATH_ON_VM).name in script


@pytest.mark.parametrize(("resource_group", "cluster_name"), [("a", "b"), ("rg.edge_(dev)-1", "edge_k3s-01")])
def test_short_and_punctuated_azure_names_are_accepted(resource_group: str, cluster_name: str) -> None:
    server = _bad(resource_group=resource_group, cluster_name=cluster_name)
    assert f'"resourceGroupName": "{resource_group}"' in first_boot.render_script("azureuser", "27.5.1", server=server)
