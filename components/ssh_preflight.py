"""Check the edge VM over SSH before it is attached: reachable, the key works, the host key is the
expected one, first boot is done, Docker works without sudo, and there is room on disk.

All of it within one deadline (`deadlineSeconds`): SSH itself is `clients/ssh.py`, which retries
TCP, handshake and sign-in until then; every remote command here gets at most what is left.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass, field

import paramiko

from clients import ssh, ssh_keys
from clients.deadline import Clock, Deadline, Sleep, retry_until

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 60.0
"""At most this per remote command, less when the deadline is nearer."""


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


def load_private_key(text: str) -> paramiko.PKey:
    """An unencrypted RSA key in any of the formats ssh-keygen and openssl write (OpenSSH,
    traditional PEM, PKCS#8), read by clients/ssh_keys.py, the one place keys are parsed; Azure ML
    attaches with RSA only. paramiko's own PEM reader would refuse PKCS#8 ("BEGIN PRIVATE KEY")."""
    try:
        key = ssh_keys.parse_private_key(text)
    except ssh_keys.KeyFormatError as error:
        raise PreflightError(
            "ssh-key",
            f"sshPrivateKey {error}",
            "set sshPrivateKey to the private half of hubSshPublicKey (RSA, no passphrase)",
        ) from None
    return paramiko.RSAKey(key=key)


HOST_KEY_FIX = (
    "if the VM was rebuilt on purpose, set sshHostKeyFingerprint to its new key (ssh-keygen -lf on the VM's "
    "/etc/ssh/ssh_host_*_key.pub); otherwise do not connect: something else answers at this address"
)


def connect(
    target: PreflightTarget, deadline: Deadline, sleep: Sleep = time.sleep, first_delay: float = 1.0
) -> ssh.SshSession:
    """An authenticated session whose host key was verified, waiting for sshd until the deadline."""
    key = load_private_key(target.private_key)
    try:
        return ssh.connect(
            target.address, target.port, target.username, key, target.expected_fingerprint, deadline, sleep, first_delay
        )
    except ssh.HostKeyMismatch as error:
        raise PreflightError("host-key", str(error), HOST_KEY_FIX) from None
    except ssh.SshAuthRefused as error:
        raise PreflightError(
            "ssh-auth",
            str(error),
            "the VM's admin key (hubSshPublicKey) must be the public half of sshPrivateKey, "
            "and hubAdminUsername the VM's admin user",
        ) from None
    except ssh.SshUnreachable as error:
        raise PreflightError(
            "ssh-reachable",
            str(error),
            "check that the VM is running and sshd started, that hubSshSourceCidrs includes where this runs "
            "from, and that sshPort is right",
        ) from None


class _Session:
    """Remote commands within the preflight's deadline, each failing as the check that ran it."""

    def __init__(self, session: ssh.SshSession, deadline: Deadline) -> None:
        self.session, self.deadline = session, deadline

    def run(self, check: str, command: str) -> tuple[int, str, str]:
        if self.deadline.expired():
            raise PreflightError(
                check,
                f"no time left of the {self.deadline.seconds:g}s deadline to run `{command}`",
                "raise attachDeadlineSeconds",
            )
        try:
            result = self.session.run(command, timeout=self.deadline.cap(COMMAND_TIMEOUT))
        except ssh.CommandTimedOut as error:
            raise PreflightError(check, str(error), f"run `{command}` on the VM by hand to see why it hangs") from None
        except ssh.SshError as error:
            raise PreflightError(check, str(error), "check that the VM is still running") from None
        return result.status, result.stdout, result.stderr


def host_key_fingerprints(address: str, port: int, deadline_seconds: float = 30.0) -> dict[str, str]:
    """Every host key the server offers, by family, without signing in (for refresh and update)."""
    try:
        return ssh.offered_host_keys(address, port, Deadline(deadline_seconds))
    except (paramiko.SSHException, OSError, EOFError) as error:
        raise ssh.SshUnreachable(address, port, f"could not read the host keys of {address}:{port} ({error})") from None


def run_preflight(
    target: PreflightTarget,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    deadline: Deadline | None = None,
) -> PreflightResult:
    """Every check in order, all within `deadline` (by default `target.deadline_seconds` from now);
    the first to fail raises `PreflightError`."""
    deadline = deadline or Deadline(target.deadline_seconds, clock)
    with connect(target, deadline, sleep) as session:
        remote = _Session(session, deadline)
        _wait_for_first_boot(remote, target, deadline, sleep)
        docker_version = _check_docker(remote)
        free_gb = _check_disk(remote, target.min_free_disk_gb)
        seen = session.host_key_fingerprint
    log.info(
        "preflight passed for %s: host key %s, Docker %s, %.1f GiB free", target.address, seen, docker_version, free_gb
    )
    return PreflightResult(host_key_fingerprint=seen, docker_version=docker_version, free_disk_gb=free_gb)


def _wait_for_first_boot(session: _Session, target: PreflightTarget, deadline: Deadline, sleep: Sleep) -> None:
    marker = shlex.quote(target.first_boot_marker)
    if not retry_until(
        lambda: session.run("first-boot", f"test -f {marker}")[0] == 0, deadline, sleep, first_delay=2.0
    ):
        raise PreflightError(
            "first-boot",
            f"{target.first_boot_marker} did not appear within {target.deadline_seconds:.0f}s",
            "first boot is still running or failed: read /var/log/cloud-init-output.log (cloud-init) or "
            "/var/lib/waagent/custom-script/download/0/stderr (custom-script) on the VM",
        )


def _check_docker(session: _Session) -> str:
    status, _, _ = session.run("docker", "command -v docker")
    if status != 0:
        raise PreflightError(
            "docker",
            "docker is not installed (not on the admin user's PATH)",
            "first boot installs it: check its log on the VM, or hubBootstrap if the image lacks cloud-init",
        )
    status, out, err = session.run("docker", "docker info --format '{{.ServerVersion}}'")
    if status != 0:
        hint = (
            "the admin user is not in the docker group yet: first boot adds it; log in again or rerun first boot"
            if "permission denied" in err.lower()
            else "start the daemon: sudo systemctl start docker"
        )
        raise PreflightError("docker", f"docker info failed for the admin user without sudo: {_tail(err or out)}", hint)
    return out


def _check_disk(session: _Session, min_free_gb: float) -> float:
    # Images and staged data live under /var/lib/docker when it exists, else on the root disk.
    status, out, err = session.run("disk", "df -Pk /var/lib/docker 2>/dev/null || df -Pk /")
    try:
        free_kib = int(out.splitlines()[-1].split()[3])
    except (IndexError, ValueError):
        raise PreflightError(
            "disk", f"could not read free space: {_tail(err or out)!r}", "check df on the VM"
        ) from None
    free_gb = free_kib / 1024 / 1024
    if status != 0 or free_gb < min_free_gb:
        raise PreflightError(
            "disk",
            f"{free_gb:.1f} GiB free, {min_free_gb:g} GiB required",
            "grow the OS disk (hubOsDiskSizeGb) or prune images (docker system prune)",
        )
    return free_gb


def _tail(text: str, limit: int = 300) -> str:
    """The end of a command's output, where the reason usually is, short enough for one error line."""
    return text if len(text) <= limit else "..." + text[-limit:]
