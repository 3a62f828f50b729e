"""`deploy --target edge`: run a model image on the Hub VM over SSH, replacing the old container.

The registry credential is a repository-scoped token (never the registry's admin user), handed
to `docker login --password-stdin`, so it appears on no command line and in no process list.
Replacement: the old container is stopped, the new one started and health-checked; if it does
not become healthy in time, it is removed and the old one started again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

log = logging.getLogger(__name__)
LABEL = "edge-training.app"


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeployTarget:
    address: str
    username: str
    private_key: str = field(repr=False)
    host_key_fingerprint: str
    """Recorded by the attach step (stack output sshHostKeyFingerprint); anything else is refused."""
    port: int = 22


@dataclass(frozen=True)
class Release:
    image: str
    registry: str
    token_name: str
    token_password: str = field(repr=False)
    app: str = "edge-model"
    host_port: int = 8080
    container_port: int = 5001


class _ExpectedHostKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: str) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        seen = "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
        if seen != self.expected:
            raise DeployError(f"{hostname} presented host key {seen}, not the recorded {self.expected}; not deploying")


class _Remote:
    def __init__(self, target: DeployTarget) -> None:
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(_ExpectedHostKey(target.host_key_fingerprint))
        self.client.connect(
            target.address,
            port=target.port,
            username=target.username,
            pkey=paramiko.RSAKey.from_private_key(io.StringIO(target.private_key)),
            look_for_keys=False,
            allow_agent=False,
            timeout=30,
        )

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        line = " ".join(shlex.quote(a) for a in argv)
        channel_in, out, err = self.client.exec_command(line, timeout=600)
        if stdin is not None:
            channel_in.write(stdin)
            channel_in.channel.shutdown_write()
        output, error = out.read().decode().strip(), err.read().decode().strip()
        if check and out.channel.recv_exit_status() != 0:
            raise DeployError(f"`{argv[0]} {argv[1] if len(argv) > 1 else ''}` failed on the VM: {error or output}")
        return output

    def succeeds(self, *argv: str) -> bool:
        """Whether the command exits 0 on the VM."""
        line = " ".join(shlex.quote(a) for a in argv)
        _, out, _ = self.client.exec_command(line, timeout=60)
        return out.channel.recv_exit_status() == 0

    def close(self) -> None:
        self.client.close()


def container_name(release: Release) -> str:
    return f"{release.app}-{hashlib.sha256(release.image.encode()).hexdigest()[:10]}"


def deploy(
    target: DeployTarget,
    release: Release,
    health_deadline_seconds: float = 180.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Deploy `release` and return the running container's name."""
    remote = _Remote(target)
    try:
        new = container_name(release)
        listed = remote.run("docker", "ps", "-a", "--filter", f"label={LABEL}={release.app}", "--format", "{{.Names}}")
        existing = [n for n in listed.splitlines() if n]
        if new in existing and remote.run("docker", "inspect", "--format", "{{.State.Running}}", new) == "true":
            log.info("%s already runs %s", new, release.image)
            return new
        remote.run(
            "docker",
            "login",
            release.registry,
            "--username",
            release.token_name,
            "--password-stdin",
            stdin=release.token_password,
        )
        try:
            remote.run("docker", "pull", release.image)
        finally:
            remote.run("docker", "logout", release.registry, check=False)
        old = [n for n in existing if n != new]
        for name in old:
            remote.run("docker", "stop", name)
        remote.run("docker", "rm", "-f", new, check=False)  # a leftover of an earlier failed attempt
        remote.run(
            "docker",
            "run",
            "-d",
            "--name",
            new,
            "--label",
            f"{LABEL}={release.app}",
            "--restart",
            "unless-stopped",
            "-p",
            f"{release.host_port}:{release.container_port}",
            release.image,
        )
        status = _wait_healthy(remote, new, release.host_port, health_deadline_seconds, clock, sleep)
        if status != "healthy":
            logs = remote.run("docker", "logs", "--tail", "20", new, check=False)
            remote.run("docker", "rm", "-f", new, check=False)
            for name in old:
                remote.run("docker", "start", name, check=False)
            raise DeployError(
                f"{new} did not become healthy within {health_deadline_seconds:.0f}s (last status {status}); "
                f"kept {', '.join(old) or 'nothing'} running. Last log lines:\n{logs}"
            )
        for name in old:
            remote.run("docker", "rm", name)
        return new
    finally:
        remote.close()


# What `docker inspect` prints on stderr for an image built without a HEALTHCHECK: the template
# has no State.Health to read. Such a container is judged by the server's own liveness route.
_NO_HEALTHCHECK = 'map has no entry for key "Health"'


def _wait_healthy(
    remote: _Remote,
    name: str,
    host_port: int,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str:
    """'healthy', 'unhealthy', or the last status seen when the deadline passed.

    The liveness route is GET / on the published port: azureml-inference-server-http answers it
    with 200 once the scoring script has initialised."""
    end = clock() + deadline
    delay = 1.0
    url = f"http://127.0.0.1:{host_port}/"
    while True:
        try:
            status = remote.run("docker", "inspect", "--format", "{{.State.Health.Status}}", name)
        except DeployError as error:
            if _NO_HEALTHCHECK not in str(error):
                status = "unknown"
            else:
                answered = remote.succeeds("curl", "-fsS", "-o", "/dev/null", "--max-time", "5", url)
                status = "healthy" if answered else f"no answer on {url}"
        if status in ("healthy", "unhealthy") or clock() >= end:
            return status
        sleep(min(delay, max(0.0, end - clock())))
        delay = min(delay * 2, 15.0)
