"""The VM's first-boot script, run for real in a throwaway root.

The system commands it calls (apt-get, dpkg-query, curl, gpg, usermod, systemctl, ...) are stubs
that keep the state a real system would (installed packages, group membership, services) in a
state directory and log every call; everything else (bash, coreutils, awk, sha256sum, tar) is the
real thing. Every stub also records its environment, and whether the first-boot or cluster-ready
marker already existed when it ran (tests/test_k3s_first_boot.py reuses all of this).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from edge import first_boot
from tests.harness.services import write_shim

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
PACKAGE_VERSION = "5:27.5.1-1~ubuntu.22.04~jammy"

# Run first by every stub: its environment, and any call made once a marker exists (a marker must
# be the last thing the script writes, after all the work it vouches for).
PRELUDE = r"""{ echo "== ${0##*/} $*"; env; } >> "$STATE/env"
for marker in first-boot-done cluster-ready; do
  [ ! -e "$EDGE_BOOTSTRAP_ROOT/var/lib/edge-training/$marker" ] ||
    echo "after $marker: ${0##*/} $*" >> "$STATE/order"
done
"""


def systemctl_stub(on_k3s_start: str = "", more_cases: str = "") -> str:
    """systemctl keeping units' enabled/active state in $STATE; `on_k3s_start` runs when k3s or
    k3s-agent starts (shell, may span lines), `more_cases` adds `case` arms (e.g. reboot)."""
    start = ' touch "$STATE/active.$unit"'
    if on_k3s_start:
        hook = on_k3s_start.strip("\n").replace("\n", "\n      ")
        start = f'\n   {start}\n    case "$unit" in k3s|k3s-agent) {hook} ;; esac'
    return (
        'echo "systemctl $*" >> "$STATE/calls"\n'
        "for unit; do :; done\n"
        'case "$1" in\n'
        '  is-enabled) [ -f "$STATE/enabled.$unit" ] ;;\n'
        '  is-active) [ -f "$STATE/active.$unit" ] ;;\n'
        '  enable) touch "$STATE/enabled.$unit" ;;\n'
        f"  start|restart){start} ;;\n"
        f"{more_cases}"
        "esac\n"
    )


STUBS = {
    "dpkg": "echo amd64\n",
    "dpkg-query": r"""echo "dpkg-query $*" >> "$STATE/calls"
for last; do :; done
[ -f "$STATE/pkg/$last" ] || exit 1
case "$*" in
  *Status*) printf 'install ok installed' ;;
  *Version*) cat "$STATE/pkg/$last" ;;
esac
""",
    "apt-get": r"""echo "apt-get $*" >> "$STATE/calls"
[ "$1" = install ] || exit 0
mkdir -p "$STATE/pkg"
for arg; do
  case "$arg" in -*|install) continue ;; esac
  name=${arg%%=*}; version=1.0; [ "$name" = "$arg" ] || version=${arg#*=}
  printf '%s' "$version" > "$STATE/pkg/$name"
done
""",
    "apt-cache": f"""echo "apt-cache $*" >> "$STATE/calls"
echo " docker-ce | 5:28.0.0-1~ubuntu.22.04~jammy | https://download.docker.com/linux/ubuntu jammy/stable amd64"
echo " docker-ce | {PACKAGE_VERSION} | https://download.docker.com/linux/ubuntu jammy/stable amd64"
""",
    "apt-mark": 'echo "apt-mark $*" >> "$STATE/calls"\n',
    # Serves $FIXTURES/<last path segment of the URL> when there is one (the K3s and Helm
    # downloads), else Docker's key.
    "curl": r"""echo "curl $*" >> "$STATE/calls"
for url; do :; done
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then
    fixture="$FIXTURES/${url##*/}"
    if [ -f "$fixture" ]; then cp "$fixture" "$2"; else echo "docker release key" > "$2"; fi
  fi
  shift
done
""",
    "gpg": 'echo "fpr:::::::::${FAKE_KEY_FINGERPRINT}:"\n',
    "id": 'cat "$STATE/groups" 2>/dev/null || echo "$2"\n',
    "usermod": r"""echo "usermod $*" >> "$STATE/calls"
for last; do :; done
echo "$last docker" > "$STATE/groups"
""",
    "systemctl": systemctl_stub(),
}


def make_system(tmp_path: Path, stubs: dict[str, str] = STUBS) -> dict[str, Path]:
    root, state, stub_dir, fixtures = (tmp_path / n for n in ("root", "state", "stubs", "fixtures"))
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=ubuntu\nVERSION_CODENAME=jammy\n")
    state.mkdir()
    fixtures.mkdir()
    for name in ("calls", "env", "order"):
        (state / name).touch()
    for name, body in stubs.items():
        write_shim(stub_dir, name, PRELUDE + body)
    return {"root": root, "state": state, "stubs": stub_dir, "fixtures": fixtures}


@pytest.fixture
def system(tmp_path: Path) -> dict[str, Path]:
    return make_system(tmp_path)


def run(
    system: dict[str, Path], script: str, fingerprint: str = DOCKER_KEY_FINGERPRINT, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    path = system["root"].parent / "first-boot.sh"
    path.write_text(script)
    env = {
        "PATH": f"{system['stubs']}:/usr/bin:/bin",
        "EDGE_BOOTSTRAP_ROOT": str(system["root"]),
        "STATE": str(system["state"]),
        "FIXTURES": str(system["fixtures"]),
        "FAKE_KEY_FINGERPRINT": fingerprint,
        "HOME": str(system["root"]),
        **extra_env,
    }
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)


def calls(system: dict[str, Path]) -> list[str]:
    return (system["state"] / "calls").read_text().splitlines()


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in ("calls", "env", "order")
    }


SCRIPT = first_boot.render_script("azureuser", "27.5.1")


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n"], input=SCRIPT, text=True, check=True)


def test_first_run_installs_pinned_docker_and_adds_the_user_to_the_docker_group(system) -> None:
    result = run(system, SCRIPT)
    assert result.returncode == 0, result.stderr
    log = calls(system)
    assert any(
        c.startswith("apt-get install")
        and f"docker-ce={PACKAGE_VERSION}" in c
        and f"docker-ce-cli={PACKAGE_VERSION}" in c
        for c in log
    ), log
    assert "apt-mark hold docker-ce docker-ce-cli" in log
    assert "usermod -aG docker azureuser" in log
    assert "systemctl enable docker" in log and "systemctl start docker" in log
    root = system["root"]
    assert (root / "etc/apt/keyrings/docker.asc").exists()
    assert (
        "signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu jammy stable"
        in (root / "etc/apt/sources.list.d/docker.list").read_text()
    )
    assert (root / first_boot.MARKER_PATH_ON_VM.lstrip("/")).read_text().strip() == "docker=27.5.1 user=azureuser"


def test_second_run_changes_nothing(system) -> None:
    assert run(system, SCRIPT).returncode == 0
    before_files, before_calls = snapshot(system["root"]), len(calls(system))
    state_before = snapshot(system["state"])
    second = run(system, SCRIPT)
    assert second.returncode == 0, second.stderr
    changing = [
        c
        for c in calls(system)[before_calls:]
        if c.startswith(("apt-get", "usermod", "curl", "apt-mark"))
        or c in ("systemctl enable docker", "systemctl start docker")
    ]
    assert changing == []
    assert snapshot(system["root"]) == before_files
    assert snapshot(system["state"]) == state_before


def test_a_changed_docker_version_is_installed_on_the_next_run(system) -> None:
    assert run(system, SCRIPT).returncode == 0
    before = len(calls(system))
    result = run(system, first_boot.render_script("azureuser", "28.0.0"))
    assert result.returncode == 0, result.stderr
    assert any("docker-ce=5:28.0.0-1~ubuntu.22.04~jammy" in c for c in calls(system)[before:])


def test_a_docker_key_with_the_wrong_fingerprint_stops_the_script(system) -> None:
    result = run(system, SCRIPT, fingerprint="0" * 40)
    assert result.returncode != 0
    assert "expected 9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in result.stderr
    assert not (system["root"] / "etc/apt/keyrings/docker.asc").exists()
    assert not any(c.startswith("apt-get install -y -q --allow-downgrades") for c in calls(system))


def test_a_version_missing_from_the_repository_is_a_clear_error(system) -> None:
    result = run(system, first_boot.render_script("azureuser", "1.2.3"))
    assert result.returncode != 0
    assert "Docker 1.2.3 is not in Docker's repository for jammy" in result.stderr


def test_no_command_runs_after_the_marker_is_written(system) -> None:
    """The attach step trusts the marker: nothing of the work may still be running or failing
    after it exists (issue 12: the marker written before the work is done)."""
    result = run(system, SCRIPT)
    assert result.returncode == 0, result.stderr
    assert (system["root"] / first_boot.MARKER_PATH_ON_VM.lstrip("/")).exists()
    assert (system["state"] / "order").read_text() == ""


def test_a_failing_last_step_leaves_no_marker(system) -> None:
    (system["stubs"] / "systemctl").write_text(
        "#!/bin/sh\n" + PRELUDE + 'echo "systemctl $*" >> "$STATE/calls"\ncase "$1" in is-*|start) exit 1 ;; esac\n'
    )
    result = run(system, SCRIPT)
    assert result.returncode != 0
    assert "systemctl start docker" in calls(system)
    assert not (system["root"] / first_boot.MARKER_PATH_ON_VM.lstrip("/")).exists()


def test_the_docker_only_script_holds_no_secrets_and_stays_0755() -> None:
    assert not first_boot.holds_secrets(SCRIPT)
    document = yaml.safe_load(first_boot.cloud_init(SCRIPT))
    assert document["write_files"][0]["permissions"] == "0755"
