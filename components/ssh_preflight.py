"""Check the edge VM over SSH before it is attached: reachable, the key works, the host key is the
expected one, first boot is done, Docker works without sudo, and there is room on disk."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class PreflightError(RuntimeError):
    """A check failed: `check` names it, the message says what was seen and the likely fix."""

    def __init__(self, check: str, problem: str, fix: str) -> None:
        self.check = check
        super().__init__(f"preflight check '{check}' failed: {problem}. Likely fix: {fix}")


@dataclass(frozen=True)
class PreflightTarget:
    address: str
    port: int
    username: str
    private_key: str = field(repr=False)
    expected_fingerprint: str | None
    """SHA256:... from config, or the one recorded on first use; None only on the very first attach."""
    deadline_seconds: float
    min_free_disk_gb: float
    first_boot_marker: str


@dataclass(frozen=True)
class PreflightResult:
    host_key_fingerprint: str
    docker_version: str
    free_disk_gb: float


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256 fingerprint as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def load_private_key(text: str) -> paramiko.PKey:
    """An RSA key in PEM or OpenSSH format (config only admits RSA: Azure ML attaches with RSA)."""
    return paramiko.RSAKey.from_private_key(io.StringIO(text))


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept the server's key only if it matches the expected fingerprint; with none expected
    (first use), accept and remember it. No known_hosts is loaded, so every connection comes here."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected
        self.seen: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.seen = fingerprint(key)
        if self.expected is not None and self.seen != self.expected:
            raise PreflightError(
                "host-key",
                f"{hostname} presented host key {self.seen}, expected {self.expected}",
                "if the VM was rebuilt on purpose, set sshHostKeyFingerprint to the new key "
                "(ssh-keygen -lf on the VM's /etc/ssh/ssh_host_*_key.pub); otherwise do not connect: "
                "something else answers at this address",
            )


def _until(attempt: Callable[[float], bool], end: float, clock: Clock, sleep: Sleep, first_delay: float) -> bool:
    """Call `attempt(seconds_left)` until it returns True or `end` passes, backing off
    exponentially (doubling from `first_delay`, at most 30 s, never past `end`)."""
    delay = first_delay
    while True:
        if attempt(max(0.1, end - clock())):
            return True
        remaining = end - clock()
        if remaining <= 0:
            return False
        sleep(min(delay, remaining))
        delay = min(delay * 2, 30.0)


def wait_for_port(
    address: str, port: int, deadline_seconds: float, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
) -> None:
    """Until the port accepts TCP, with exponential backoff (1 s doubling to 30 s), up to the deadline."""
    errors: list[OSError] = []

    def connects(seconds_left: float) -> bool:
        try:
            with socket.create_connection((address, port), timeout=min(10.0, seconds_left)):
                return True
        except OSError as error:
            errors.append(error)
            return False

    if not _until(connects, clock() + deadline_seconds, clock, sleep, first_delay=1.0):
        raise PreflightError(
            "ssh-reachable",
            f"{address}:{port} did not accept connections within {deadline_seconds:.0f}s ({errors[-1]})",
            "check that the VM is running, that hubSshSourceCidrs includes where this runs from, "
            "and that sshPort is right",
        )


class _Session:
    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client

    def run(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out.strip(), err.strip()


def connect(target: PreflightTarget, timeout: float = 15.0) -> tuple[paramiko.SSHClient, str]:
    """An authenticated SSH client whose host key was verified, and that key's fingerprint."""
    policy = _PinnedHostKey(target.expected_fingerprint)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(policy)
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.username,
            pkey=load_private_key(target.private_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except PreflightError:
        client.close()
        raise
    except paramiko.AuthenticationException as error:
        client.close()
        raise PreflightError(
            "ssh-auth",
            f"{target.username}@{target.address} refused the key ({error})",
            "the VM's admin key (hubSshPublicKey) must be the public half of sshPrivateKey, "
            "and hubAdminUsername the VM's admin user",
        ) from error
    except (paramiko.SSHException, OSError) as error:
        client.close()
        raise PreflightError(
            "ssh-connect", f"SSH to {target.address}:{target.port} failed ({error})", "check that sshd runs on the VM"
        ) from error
    if policy.seen is None:  # cannot happen with no known_hosts loaded; never trust an unseen key
        client.close()
        raise PreflightError("host-key", "the server's host key was never checked", "report this as a bug")
    return client, policy.seen


def host_key_fingerprint(address: str, port: int, timeout: float = 15.0) -> str:
    """The server's host key fingerprint, without authenticating."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=timeout)
            return fingerprint(transport.get_remote_server_key())
        finally:
            transport.close()


def run_preflight(target: PreflightTarget, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> PreflightResult:
    """Every check in order; the first to fail raises `PreflightError`."""
    end = clock() + target.deadline_seconds
    wait_for_port(target.address, target.port, target.deadline_seconds, clock, sleep)
    client, seen = connect(target)
    try:
        session = _Session(client)
        _wait_for_first_boot(session, target, end, clock, sleep)
        docker_version = _check_docker(session)
        free_gb = _check_disk(session, target.min_free_disk_gb)
    finally:
        client.close()
    log.info(
        "preflight passed for %s: host key %s, Docker %s, %.1f GiB free", target.address, seen, docker_version, free_gb
    )
    return PreflightResult(host_key_fingerprint=seen, docker_version=docker_version, free_disk_gb=free_gb)


def _wait_for_first_boot(session: _Session, target: PreflightTarget, end: float, clock: Clock, sleep: Sleep) -> None:
    marker = shlex.quote(target.first_boot_marker)
    if not _until(lambda _left: session.run(f"test -f {marker}")[0] == 0, end, clock, sleep, first_delay=2.0):
        raise PreflightError(
            "first-boot",
            f"{target.first_boot_marker} did not appear within {target.deadline_seconds:.0f}s",
            "first boot is still running or failed: read /var/log/cloud-init-output.log (cloud-init) or "
            "/var/lib/waagent/custom-script/download/0/stderr (custom-script) on the VM",
        )


def _check_docker(session: _Session) -> str:
    status, _, _ = session.run("command -v docker")
    if status != 0:
        raise PreflightError(
            "docker",
            "docker is not installed (not on the admin user's PATH)",
            "first boot installs it: check its log on the VM, or hubBootstrap if the image lacks cloud-init",
        )
    status, out, err = session.run("docker info --format '{{.ServerVersion}}'")
    if status != 0:
        hint = (
            "the admin user is not in the docker group yet: first boot adds it; log in again or rerun first boot"
            if "permission denied" in err.lower()
            else "start the daemon: sudo systemctl start docker"
        )
        raise PreflightError("docker", f"docker info failed for the admin user without sudo: {err or out}", hint)
    return out


def _check_disk(session: _Session, min_free_gb: float) -> float:
    # Images and staged data live under /var/lib/docker when it exists, else on the root disk.
    status, out, err = session.run("df -Pk /var/lib/docker 2>/dev/null || df -Pk /")
    try:
        free_kib = int(out.splitlines()[-1].split()[3])
    except (IndexError, ValueError):
        raise PreflightError("disk", f"could not read free space: {err or out!r}", "check df on the VM") from None
    free_gb = free_kib / 1024 / 1024
    if status != 0 or free_gb < min_free_gb:
        raise PreflightError(
            "disk",
            f"{free_gb:.1f} GiB free, {min_free_gb:g} GiB required",
            "grow the OS disk (hubOsDiskSizeGb) or prune images (docker system prune)",
        )
    return free_gb
