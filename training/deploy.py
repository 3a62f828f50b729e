"""`deploy --target edge`: run a model image on the Hub, over SSH, by the stack's edge mode.

virtual-machine mode (stack output edgeComputeMode missing or "virtual-machine"): `docker run`.
The old container is stopped, the new one started and health-checked (its HEALTHCHECK, or the
server's liveness route GET / when the image has none); if it does not become healthy in time,
it is removed and the old one started again. With a Hub CA (stack output hubCaCertificates), the
VM's copy from first boot (/etc/edge-training/hub-ca.pem) is mounted read-only at the same path
and named by EDGE_HUB_CA_FILE, from which the image's score.py trusts certifi's roots plus the CA.

kubernetes mode: the manifests of edge/serving_manifests.py applied to the K3s cluster with
`kubectl apply -f -` from stdin, then `kubectl rollout status`; a rollout that does not finish in
time is undone (`kubectl rollout undo`), and a first one that fails is removed. The Hub CA reaches
the pod through a ConfigMap made from the stack output (edge/serving_manifests.py).

The registry credential is the repository-scoped pull token (never the registry's admin user),
its password generated on request (generate_pull_password) and handed over stdin only: to
`docker login --password-stdin`, or inside the pull secret to `kubectl apply -f -`. It appears on
no command line and in no process list.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

from clients import ssh, ssh_keys
from clients.deadline import Deadline, retry_until
from edge import serving_manifests
from edge.real_edge import HUB_CA_ON_VM

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
    hub_ca_file: str = ""
    """The Hub's CA on the VM (edge/real_edge.py HUB_CA_ON_VM, written at first boot when the stack
    has hubCaCertificates), mounted read-only at that path in the container; empty: none."""

    def trust_arguments(self) -> tuple[str, ...]:
        """`docker run` options that hand the container the Hub's CA: a read-only file and its path."""
        if not self.hub_ca_file:
            return ()
        inside = HUB_CA_ON_VM  # the path jobs see too; score.py reads it from EDGE_HUB_CA_FILE
        return ("-v", f"{self.hub_ca_file}:{inside}:ro", "-e", f"EDGE_HUB_CA_FILE={inside}")


CONNECT_SECONDS = 30.0
COMMAND_SECONDS = 600.0
PROBE_SECONDS = 60.0


class _Remote:
    """The VM through clients/ssh.py, the one place that speaks SSH: the host key pinned to the
    recorded fingerprint (every key type the VM offers is checked), the connection retried until a
    deadline, every command with a timeout."""

    def __init__(self, target: DeployTarget) -> None:
        try:
            key = paramiko.RSAKey(key=ssh_keys.parse_private_key(target.private_key))
        except ssh_keys.KeyFormatError as error:
            raise DeployError(f"--ssh-key {error}") from None
        try:
            self.session = ssh.connect(
                target.address,
                target.port,
                target.username,
                key,
                target.host_key_fingerprint,
                Deadline(CONNECT_SECONDS),
            )
        except ssh.HostKeyMismatch as error:
            offered = ", ".join(error.offered.values()) or "none"
            raise DeployError(
                f"{target.address} presented host key {offered}, not the recorded {error.expected}; not deploying"
            ) from None
        except ssh.SshError as error:
            raise DeployError(str(error)) from None

    def _exec(self, argv: tuple[str, ...], timeout: float, stdin: str | None = None) -> ssh.CommandResult:
        try:
            return self.session.run(" ".join(shlex.quote(a) for a in argv), timeout, stdin=stdin)
        except ssh.SshError as error:
            raise DeployError(str(error)) from None

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        done = self._exec(argv, COMMAND_SECONDS, stdin)
        if check and done.status != 0:
            raise DeployError(
                f"`{argv[0]} {argv[1] if len(argv) > 1 else ''}` failed on the VM: {done.stderr or done.stdout}"
            )
        return done.stdout

    def succeeds(self, *argv: str) -> bool:
        """Whether the command exits 0 on the VM."""
        return self._exec(argv, PROBE_SECONDS).status == 0

    def close(self) -> None:
        self.session.close()


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
        # Docker would create a missing bind source as an empty directory and start a server that
        # then fails on it: a missing CA is named here, before the old container is stopped.
        if release.hub_ca_file and not remote.succeeds("test", "-f", release.hub_ca_file):
            raise DeployError(
                f"the stack has hubCaCertificates but the VM has no {release.hub_ca_file} (written at first "
                "boot): redeploy the VM with the CA, or remove hubCaCertificates; nothing was changed"
            )
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
            *release.trust_arguments(),
            release.image,
        )
        status = _wait_healthy(remote, new, release.host_port, health_deadline_seconds, clock, sleep)
        log.info("%s: %s", new, status)
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
# What older Docker templates print instead of failing: no status is not a healthy status.
_NO_STATUS = ("", "<no value>")


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
    url = f"http://127.0.0.1:{host_port}/"
    last = ["unknown"]

    def settled() -> bool:
        try:
            status = remote.run("docker", "inspect", "--format", "{{.State.Health.Status}}", name)
            probe = status in _NO_STATUS
        except DeployError as error:
            status, probe = "unknown", _NO_HEALTHCHECK in str(error)
        if probe:
            answered = remote.succeeds("curl", "-fsS", "-o", "/dev/null", "--max-time", "5", url)
            status = "healthy" if answered else f"no answer on {url}"
        last[0] = status
        return status in ("healthy", "unhealthy")

    retry_until(settled, Deadline(deadline, clock), sleep, first_delay=1.0, max_delay=15.0)
    return last[0]


# --- kubernetes mode ----------------------------------------------------------------------------------

KUBECTL = ("kubectl",)
"""K3s installs kubectl; the admin user reads the cluster's kubeconfig (K3s write-kubeconfig-mode)."""


def deploy_kubernetes(
    target: DeployTarget,
    release: serving_manifests.ServingRelease,
    rollout_seconds: int = 300,
    kubectl: tuple[str, ...] = KUBECTL,
) -> str:
    """Apply the manifests and wait for the rollout; undo it if it does not finish in time.

    Returns the Deployment's name."""
    remote = _Remote(target)
    where = ("--namespace", release.namespace)
    deployment = f"deployment/{release.app}"
    try:
        existed = remote.succeeds(*kubectl, "get", deployment, *where)
        remote.run(*kubectl, "apply", "-f", "-", stdin=serving_manifests.as_list(release))
        done = remote.succeeds(*kubectl, "rollout", "status", deployment, *where, f"--timeout={rollout_seconds}s")
        if done:
            log.info("%s rolled out %s", deployment, release.image)
            return release.app
        logs = remote.run(*kubectl, "logs", deployment, *where, "--tail=20", check=False)
        if existed:
            remote.run(*kubectl, "rollout", "undo", deployment, *where, check=False)
            remote.run(*kubectl, "rollout", "status", deployment, *where, f"--timeout={rollout_seconds}s", check=False)
            kept = "rolled back to the previous revision"
        else:
            names = f"deployment/{release.app},service/{release.app},secret/{release.pull_secret}"
            if release.hub_ca.strip():
                names += f",configmap/{release.hub_ca_config_map}"
            remote.run(*kubectl, "delete", names, *where, "--ignore-not-found", check=False)
            kept = "removed it (there was no previous revision)"
        raise DeployError(
            f"{deployment} did not become ready within {rollout_seconds}s; {kept}. Last log lines:\n{logs}"
        )
    finally:
        remote.close()


def edge_mode(values: dict[str, object]) -> str:
    """The stack output edgeComputeMode; a stack without it predates Kubernetes: virtual-machine."""
    mode = str(values.get("edgeComputeMode") or "virtual-machine")
    if mode not in ("kubernetes", "virtual-machine"):
        raise DeployError(f"stack output edgeComputeMode is {mode!r}, expected kubernetes or virtual-machine")
    return mode


# --- the pull password, generated on request -----------------------------------------------------------


def generate_pull_password(
    client: object, resource_group: str, registry: str, token_id: str, lifetime_hours: float = 2.0
) -> str:
    """A new password for the pull token, valid for `lifetime_hours` (registries/generateCredentials).

    password2 is the one rotated here, so a password1 an operator set by hand keeps working."""
    import datetime

    from azure.mgmt.containerregistry.v2025_03_01_preview import models

    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=lifetime_hours)
    result = client.registries.begin_generate_credentials(  # type: ignore[attr-defined]
        resource_group,
        registry,
        models.GenerateCredentialsParameters(token_id=token_id, expiry=expiry, name="password2"),
    ).result()
    passwords = [p.value for p in result.passwords or [] if p.name == "password2" and p.value]
    if not passwords:
        raise DeployError(f"the registry generated no password2 for token {token_id.rsplit('/', 1)[-1]}")
    return passwords[0]
