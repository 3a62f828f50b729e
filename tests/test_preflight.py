"""The attach preflight against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clients.deadline import LAST_LOOK_S, Deadline
from components.ssh_preflight import PreflightError, PreflightTarget, connect, run_preflight
from tests.harness import services
from tests.harness.clock import FakeClock
from tests.harness.keys import KeyPair, rsa_key

DOCKER_OK = """case "$*" in
  "info --format {{.ServerVersion}}") echo 27.5.1 ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def target(server: services.SshServer, key: KeyPair, marker: Path, **overrides: object) -> PreflightTarget:
    values: dict[str, object] = {
        "address": services.LOOPBACK,
        "port": server.port,
        "username": server.user,
        "private_key": key.private_pem,
        "expected_fingerprint": None,
        "deadline_seconds": 5.0,
        "min_free_disk_gb": 0.001,
        "first_boot_marker": str(marker),
    }
    values.update(overrides)
    return PreflightTarget(**values)  # type: ignore[arg-type]


@pytest.fixture
def booted(tmp_path: Path) -> Path:
    marker = tmp_path / "first-boot-done"
    marker.write_text("docker=27.5.1 user=azureuser\n")
    return marker


@pytest.fixture
def docker_ok(ssh_server: services.SshServer) -> None:
    services.write_shim(ssh_server.directory / "shims", "docker", DOCKER_OK)


def expect_failure(check: str, t: PreflightTarget, clock: FakeClock | None = None) -> PreflightError:
    with pytest.raises(PreflightError) as caught:
        if clock is None:
            run_preflight(t)
        else:
            run_preflight(t, clock=clock, sleep=clock.sleep)
    assert caught.value.check == check, str(caught.value)
    assert "Likely fix:" in str(caught.value)
    return caught.value


def test_a_ready_vm_passes_and_its_host_key_is_recorded(ssh_server, ssh_user_key, booted, docker_ok) -> None:
    result = run_preflight(target(ssh_server, ssh_user_key, booted))
    assert result.host_key_fingerprint == ssh_server.host_key_fingerprint
    assert result.docker_version == "27.5.1"
    assert result.free_disk_gb > 0


def test_the_expected_host_key_is_accepted(ssh_server, ssh_user_key, booted, docker_ok) -> None:
    t = target(ssh_server, ssh_user_key, booted, expected_fingerprint=ssh_server.host_key_fingerprint)
    assert run_preflight(t).host_key_fingerprint == ssh_server.host_key_fingerprint


def test_an_unexpected_host_key_is_refused(ssh_server, ssh_user_key, booted, docker_ok) -> None:
    other = "SHA256:" + "A" * 43
    error = expect_failure("host-key", target(ssh_server, ssh_user_key, booted, expected_fingerprint=other))
    assert ssh_server.host_key_fingerprint in str(error) and other in str(error)


def test_a_wrong_user_key_is_refused_at_the_deadline(ssh_server, booted, docker_ok) -> None:
    """Sign-in is retried (the key may not be installed yet), so the refusal comes at the deadline."""
    clock = FakeClock()
    expect_failure("ssh-auth", target(ssh_server, rsa_key("stranger"), booted), clock)
    # The last attempt starts LAST_LOOK_S before the 5 s deadline (clients/deadline.py's edge rule).
    assert clock.now == 5.0 - LAST_LOOK_S


def test_a_closed_port_fails_within_its_deadline_with_backoff(tmp_path: Path, booted: Path) -> None:
    with socket.socket() as sock:
        sock.bind((services.LOOPBACK, 0))
        closed_port = sock.getsockname()[1]
    clock = FakeClock()
    with pytest.raises(PreflightError) as caught:
        t = PreflightTarget(
            services.LOOPBACK, closed_port, "azureuser", rsa_key("ssh-user").private_pem, None, 20, 0, ""
        )
        connect(t, Deadline(20, clock), sleep=clock.sleep)
    assert caught.value.check == "ssh-reachable"
    # Doubling, the last wait cut so the last attempt starts LAST_LOOK_S before the deadline.
    assert clock.sleeps == [1, 2, 4, 8, 5 - LAST_LOOK_S]
    assert clock.now == 20 - LAST_LOOK_S


def test_a_closed_port_fails_for_real_with_a_short_deadline(start_ssh_server, ssh_user_key, booted) -> None:
    server = start_ssh_server([ssh_user_key], name="stopped")
    server.stop()  # a port that just refused to stay open
    t = PreflightTarget(
        services.LOOPBACK, server.port, server.user, ssh_user_key.private_pem, None, 0.5, 0.0, str(booted)
    )
    expect_failure("ssh-reachable", t)


def test_first_boot_not_finished_fails_after_the_deadline(ssh_server, ssh_user_key, tmp_path, docker_ok) -> None:
    clock = FakeClock()
    error = expect_failure(
        "first-boot", target(ssh_server, ssh_user_key, tmp_path / "never", deadline_seconds=30), clock
    )
    assert clock.now >= 30 - LAST_LOOK_S  # the last look, just before the deadline
    assert "cloud-init-output.log" in str(error)


def test_docker_missing_is_a_clear_error(start_ssh_server, ssh_user_key, tmp_path, booted) -> None:
    bin_dir = services.restricted_bin(tmp_path / "bin", ["sh", "bash", "df", "test", "cat"])
    server = start_ssh_server([ssh_user_key], path=[bin_dir], name="no-docker")
    error = expect_failure("docker", target(server, ssh_user_key, booted))
    assert "not installed" in str(error)


def test_docker_without_permission_points_at_the_docker_group(ssh_server, ssh_user_key, booted) -> None:
    services.write_shim(
        ssh_server.directory / "shims",
        "docker",
        'echo "permission denied while trying to connect to the Docker daemon socket" >&2; exit 1\n',
    )
    error = expect_failure("docker", target(ssh_server, ssh_user_key, booted))
    assert "docker group" in str(error)


def test_too_little_free_disk_is_refused(ssh_server, ssh_user_key, booted, docker_ok) -> None:
    error = expect_failure("disk", target(ssh_server, ssh_user_key, booted, min_free_disk_gb=10**9))
    assert "GiB required" in str(error)
