"""The VM's first-boot script, run for real in a throwaway root.

The system commands it calls (apt-get, dpkg-query, curl, gpg, usermod, systemctl, ...) are stubs
that keep the state a real system would (installed packages, group membership, services) in a
state directory and log every call; everything else (bash, coreutils, awk) is the real thing.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from components import first_boot
from tests.harness.services import write_shim

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
PACKAGE_VERSION = "5:27.5.1-1~ubuntu.22.04~jammy"

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
    "curl": r"""echo "curl $*" >> "$STATE/calls"
while [ $# -gt 0 ]; do [ "$1" = -o ] && { echo "docker release key" > "$2"; }; shift; done
""",
    "gpg": 'echo "fpr:::::::::${FAKE_KEY_FINGERPRINT}:"\n',
    "id": 'cat "$STATE/groups" 2>/dev/null || echo "$2"\n',
    "usermod": r"""echo "usermod $*" >> "$STATE/calls"
for last; do :; done
echo "$last docker" > "$STATE/groups"
""",
    "systemctl": r"""echo "systemctl $*" >> "$STATE/calls"
case "$1" in
  is-enabled) [ -f "$STATE/enabled" ] ;;
  is-active) [ -f "$STATE/active" ] ;;
  enable) touch "$STATE/enabled" ;;
  start) touch "$STATE/active" ;;
esac
""",
}


@pytest.fixture
def system(tmp_path: Path) -> dict[str, Path]:
    root, state, stubs = tmp_path / "root", tmp_path / "state", tmp_path / "stubs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=ubuntu\nVERSION_CODENAME=jammy\n")
    state.mkdir()
    (state / "calls").touch()
    for name, body in STUBS.items():
        write_shim(stubs, name, body)
    return {"root": root, "state": state, "stubs": stubs}


def run(
    system: dict[str, Path], script: str, fingerprint: str = DOCKER_KEY_FINGERPRINT
) -> subprocess.CompletedProcess[str]:
    path = system["root"].parent / "first-boot.sh"
    path.write_text(script)
    env = {
        "PATH": f"{system['stubs']}:/usr/bin:/bin",
        "EDGE_BOOTSTRAP_ROOT": str(system["root"]),
        "STATE": str(system["state"]),
        "FAKE_KEY_FINGERPRINT": fingerprint,
        "HOME": str(system["root"]),
    }
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)


def calls(system: dict[str, Path]) -> list[str]:
    return (system["state"] / "calls").read_text().splitlines()


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "calls"
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
