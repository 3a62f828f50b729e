"""The attach step against an unlucky operator's faults, one row per fault, with the real services:
OpenSSH's sshd (started late, refusing the key at first, offering ed25519 and RSA host keys,
running a `docker` that hangs), listeners that accept TCP and never speak, and the local HTTPS
Resource Manager (silent, `Retry-After: 86400`, malformed JSON, a compute stuck Creating, a
compute of that name that someone else attached, bodies that carry key material).

Every row asserts that the error names the input (the compute, the workspace, the address), that
no traceback or secret is in the message, and that nothing outlives its deadline: time is a fake
clock that moves only when the code sleeps, and where a real socket must wait (a listener that
never speaks), the deadline is short and pytest-timeout bounds the test.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clients import ssh
from clients.cloud import Cloud
from clients.deadline import LAST_LOOK_S, Deadline
from components.azureml_computes import (
    ComputeApiError,
    ComputeClient,
    ComputeExistsError,
    ComputeRef,
    VirtualMachineAttachment,
)
from components.ssh_preflight import PreflightError, PreflightTarget, connect, load_private_key, run_preflight
from tests.harness import services
from tests.harness.arm_server import TEST_TOKEN, ArmEndpoint, RecordingTransport, Reply, StaticCredential
from tests.harness.clock import FakeClock
from tests.harness.keys import KeyPair, rsa_key

pytestmark = pytest.mark.timeout(60)  # no row may hang; rows that wait in real time set less

USER_KEY = rsa_key("ssh-user")
VM_KEY = rsa_key("vm-admin")
SECRETS = (USER_KEY.private_pem.splitlines()[1], VM_KEY.private_pem.splitlines()[1], TEST_TOKEN, "PRIVATE KEY")


def assert_clean(message: str) -> None:
    """One clear line for a user: no traceback, no key, no token."""
    assert "Traceback" not in message
    for secret in SECRETS:
        assert secret not in message, f"secret {secret[:12]}... in {message!r}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((services.LOOPBACK, 0))
        return int(sock.getsockname()[1])


class Listener:
    """A TCP listener on 127.0.0.1 that `behaviour`s every connection:
    - "silent": accepts and never sends a byte (with `context`, completes TLS first: an HTTPS
      server that never answers);
    - "hangup": accepts and closes at once (an sshd that is not ready);
    - "answer": with TLS, reads a request and sends `answer` as is (bodies no stand-in would send).
    """

    def __init__(
        self, behaviour: str, port: int = 0, context: ssl.SSLContext | None = None, answer: bytes = b""
    ) -> None:
        self._behaviour, self._context, self._answer = behaviour, context, answer
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((services.LOOPBACK, port))
        self._server.listen(16)
        self.port = int(self._server.getsockname()[1])
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name=f"listener-{behaviour}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            if self._behaviour == "hangup":
                conn.close()
                continue
            try:
                if self._context is not None:
                    conn.settimeout(5)
                    conn = self._context.wrap_socket(conn, server_side=True)
                if self._behaviour == "answer":
                    conn.recv(65536)
                    conn.sendall(self._answer)
                    conn.close()
                    continue
            except OSError:
                conn.close()
                continue
            self._held.append(conn)

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept(); close alone would leave the port bound.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- SSH ------------------------------------------------------------------------------------------


def preflight_target(port: int, key: KeyPair = USER_KEY, **overrides: Any) -> PreflightTarget:
    values: dict[str, Any] = {
        "address": services.LOOPBACK,
        "port": port,
        "username": services.getpass.getuser(),
        "private_key": key.private_pem,
        "expected_fingerprint": None,
        "deadline_seconds": 30.0,
        "min_free_disk_gb": 0.001,
        "first_boot_marker": __file__,  # a file that exists: first boot is done
    }
    values.update(overrides)
    return PreflightTarget(**values)


@pytest.fixture
def start_sshd(tmp_path: Path) -> Iterator[Callable[..., services.SshServer]]:
    started: list[services.SshServer] = []

    def start(name: str = "sshd", keys: tuple[KeyPair, ...] = (USER_KEY,), **options: Any) -> services.SshServer:
        server = services.start_sshd(tmp_path / name, keys, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.timeout(60)
def test_an_sshd_that_starts_late_is_waited_for(start_sshd: Callable[..., services.SshServer]) -> None:
    """Connection refused twice, then sshd is up: the session is made within the deadline."""
    port = free_port()
    clock = FakeClock(on_sleep=lambda n: start_sshd(port=port) if n == 2 else None)
    with connect(preflight_target(port), Deadline(30, clock), sleep=clock.sleep) as session:
        assert session.run("echo ready", timeout=10).stdout == "ready"
    assert clock.sleeps == [1, 2]


@pytest.mark.timeout(60)
def test_a_handshake_that_fails_while_sshd_starts_is_retried(start_sshd: Callable[..., services.SshServer]) -> None:
    """The port accepts TCP and hangs up (sshd not ready): retried like a refused port, not failed
    at once as a TCP-only wait would."""
    not_ready = Listener("hangup")

    def world(n: int) -> None:
        if n == 2:
            not_ready.close()
            start_sshd(port=not_ready.port)

    clock = FakeClock(on_sleep=world)
    try:
        with connect(preflight_target(not_ready.port), Deadline(30, clock), sleep=clock.sleep) as session:
            assert session.host_key_fingerprint.startswith("SHA256:")
    finally:
        not_ready.close()
    assert clock.sleeps == [1, 2]


@pytest.mark.timeout(60)
def test_a_key_installed_late_is_waited_for(start_sshd: Callable[..., services.SshServer]) -> None:
    """sshd is up but refuses the key (cloud-init has not installed it yet): sign-in is retried."""
    stranger = rsa_key("stranger")
    server = start_sshd(keys=(stranger,))
    authorized = server.directory / "authorized_keys"
    clock = FakeClock(on_sleep=lambda n: authorized.write_text(f"{USER_KEY.public_openssh}\n") if n == 1 else None)
    with connect(preflight_target(server.port), Deadline(30, clock), sleep=clock.sleep) as session:
        assert session.host_key_fingerprint == server.host_key_fingerprint
    assert clock.sleeps == [1]


@dataclass(frozen=True)
class SshFault:
    """A VM that answers badly; the check that must fail, and what the error must name."""

    name: str
    check: str
    says: tuple[str, ...]
    host_key_types: tuple[str, ...] = ("ed25519",)
    key: KeyPair = USER_KEY
    expected: Callable[[services.SshServer], str | None] = lambda _server: None
    deadline: float = 30.0
    sleeps: list[float] | None = None
    """The backoff the fake clock must see; None: not checked."""


SSH_FAULTS = [
    SshFault(
        "a wrong user key, refused until the deadline",
        "ssh-auth",
        ("refused the key", "30s deadline", "hubSshPublicKey"),
        key=rsa_key("stranger"),
        sleeps=[1, 2, 4, 8, 15 - LAST_LOOK_S],
    ),
    SshFault(
        "a host key that none of the offered ones matches, refused at once",
        "host-key",
        ("SHA256:" + "F" * 43, "ssh-ed25519 SHA256:", "ssh-rsa SHA256:", "sshHostKeyFingerprint"),
        host_key_types=("ed25519", "rsa"),
        expected=lambda _server: "SHA256:" + "F" * 43,
        sleeps=[],  # a wrong host key is not a VM still booting: no retry
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", SSH_FAULTS, ids=lambda f: f.name)
def test_ssh_faults_fail_with_one_clear_error(start_sshd: Callable[..., services.SshServer], fault: SshFault) -> None:
    server = start_sshd(host_key_types=fault.host_key_types)
    clock = FakeClock()
    target = preflight_target(server.port, fault.key, expected_fingerprint=fault.expected(server))
    with pytest.raises(PreflightError) as caught:
        run_preflight(target, clock=clock, sleep=clock.sleep)
    assert caught.value.check == fault.check
    message = str(caught.value)
    for said in (*fault.says, f"{services.LOOPBACK}:{server.port}"):
        assert said in message
    assert_clean(message)
    assert clock.now <= fault.deadline
    if fault.sleeps is not None:
        assert clock.sleeps == fault.sleeps


@pytest.mark.timeout(60)
def test_a_correct_rsa_fingerprint_is_accepted_when_the_vm_also_offers_ed25519(
    start_sshd: Callable[..., services.SshServer],
) -> None:
    server = start_sshd(host_key_types=("ed25519", "rsa"))
    rsa = server.host_key_fingerprints["rsa"]
    assert rsa != server.host_key_fingerprints["ed25519"]
    with connect(preflight_target(server.port, expected_fingerprint=rsa), Deadline(30)) as session:
        assert (session.host_key_fingerprint, session.host_key_family) == (rsa, "ssh-rsa")
    assert ssh.offered_host_keys(services.LOOPBACK, server.port, Deadline(30)) == {
        "ssh-ed25519": server.host_key_fingerprints["ed25519"],
        "ssh-rsa": rsa,
    }


@pytest.mark.timeout(10)
@pytest.mark.parametrize("behaviour", ["silent", "hangup"])
def test_a_listener_that_never_speaks_ssh_costs_the_deadline_not_more(behaviour: str) -> None:
    """Real time: a port that accepts TCP and never sends a banner (or hangs up). paramiko's own
    15 s banner timeout per attempt would blow the test's 10 s timeout; the deadline is 1 s."""
    with Listener(behaviour) as port_only, pytest.raises(PreflightError) as caught:
        connect(preflight_target(port_only.port, deadline_seconds=1.0), Deadline(1.0), first_delay=0.2)
    assert caught.value.check == "ssh-reachable"
    assert f"{services.LOOPBACK}:{port_only.port}" in str(caught.value)
    assert_clean(str(caught.value))


@pytest.mark.timeout(30)
def test_a_docker_that_hangs_is_abandoned_at_the_deadline(
    start_sshd: Callable[..., services.SshServer], tmp_path: Path
) -> None:
    """Real time: `docker info` never returns (a daemon that hangs). The old fixed 60 s command
    timeout would blow the test's 30 s timeout; the deadline is 3 s. The shim waits on its stdin,
    so closing the channel also ends it (nothing is left running on the "VM")."""
    shims = tmp_path / "shims"
    services.write_shim(
        shims, "docker", 'case "$1" in info) cat >/dev/null ;; *) echo "unexpected: $*" >&2; exit 2 ;; esac\n'
    )
    server = start_sshd(path=[shims, "/usr/bin", "/bin"])
    with pytest.raises(PreflightError) as caught:
        run_preflight(preflight_target(server.port, deadline_seconds=3.0))
    assert caught.value.check == "docker"
    assert "`docker info --format '{{.ServerVersion}}'`" in str(caught.value)
    assert_clean(str(caught.value))


@pytest.mark.parametrize("form", ["traditional PEM", "PKCS#8", "OpenSSH"])
def test_every_format_of_the_rsa_key_signs_in(start_sshd: Callable[..., services.SshServer], form: str) -> None:
    """paramiko's own reader refuses PKCS#8 ("BEGIN PRIVATE KEY"), which openssl writes by default."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(USER_KEY.private_pem.encode(), password=None)
    formats = {
        "traditional PEM": USER_KEY.private_pem,
        "PKCS#8": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "OpenSSH": USER_KEY.private_openssh,
    }
    server = start_sshd()
    with connect(preflight_target(server.port, private_key=formats[form]), Deadline(30)) as session:
        assert session.host_key_fingerprint == server.host_key_fingerprint


def test_an_ed25519_key_is_refused_as_not_rsa() -> None:
    from tests.harness.keys import ed25519_key

    with pytest.raises(PreflightError, match="not an RSA key") as caught:
        load_private_key(ed25519_key().private_openssh)
    assert caught.value.check == "ssh-key"


def test_a_private_key_that_is_not_one_is_named_without_echoing_it() -> None:
    garbage = "-----BEGIN RSA PRIVATE KEY-----\nAAAAnotakey\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(PreflightError) as caught:
        load_private_key(garbage)
    assert caught.value.check == "ssh-key" and "sshPrivateKey" in str(caught.value)
    assert "AAAAnotakey" not in str(caught.value)


# --- HTTP: the compute REST client ---------------------------------------------------------------

REF = ComputeRef("11111111-1111-1111-1111-111111111111", "rg-ml", "mlw-dev", "edge-vm")
ATTACHMENT = VirtualMachineAttachment(
    location="westeurope",
    address="192.0.2.10",
    ssh_port=22,
    username="azureuser",
    private_key_pem=VM_KEY.private_pem,
    owner="edge-training/dev",
)
GONE = Reply(404, {"error": {"code": "NotFound", "message": "no such compute"}})


def compute(state: str, description: str = ATTACHMENT.description, **properties: Any) -> dict[str, Any]:
    return {
        "id": REF.path,
        "name": REF.name,
        "properties": {
            "computeType": "VirtualMachine",
            "provisioningState": state,
            "description": description,
            # A GET can return the credentials (VirtualMachineSshCredentials is readable at 2025-12-01).
            "properties": {"administratorAccount": {"username": "azureuser", "privateKeyData": VM_KEY.private_pem}},
            **properties,
        },
    }


def client_for(url: str, transport: RecordingTransport, clock: FakeClock) -> ComputeClient:
    cloud = Cloud(url + "/", "https://login.microsoftonline.com/", "https://management.core.windows.net/")
    return ComputeClient(StaticCredential(), cloud, transport=transport, poll_seconds=10, sleep=clock.sleep)


@dataclass(frozen=True)
class ArmFault:
    name: str
    replies: dict[str, list[Reply]]
    says: tuple[str, ...]
    methods: list[str]
    """The requests the client must have sent, in order: no PUT where none may go."""
    code: str | None = None
    error: type[ComputeApiError] = ComputeApiError
    slept: list[float] = field(default_factory=list)


PEM_IN_MESSAGE = f"cannot use key {VM_KEY.private_pem}"
ARM_FAULTS = [
    ArmFault(
        "Retry-After: 86400 fails at once instead of sleeping a day",
        {"GET": [Reply(429, {"error": {"code": "TooManyRequests", "message": "later"}}, {"Retry-After": "86400"})]},
        ("Retry-After: 86400", "'edge-vm'", "'mlw-dev'"),
        ["GET"],
        code="Timeout",
    ),
    ArmFault(
        "a compute of that name this stack did not attach is refused before any PUT",
        {"GET": [Reply(200, compute("Succeeded", description="Jane's GPU box"))]},
        ("'edge-vm'", "'mlw-dev'", "did not attach", "computeName", "az ml compute detach"),
        ["GET"],
        code="ComputeExists",
        error=ComputeExistsError,
    ),
    ArmFault(
        "a compute still Creating at the deadline is detached",
        {
            "GET": [GONE, Reply(200, compute("Creating"))],
            "PUT": [Reply(201, compute("Creating"))],
            "DELETE": [Reply(200)],
        },
        ("still Creating at the 30s deadline; it was detached again", "'edge-vm'"),
        # Polls at 10 s, 20 s and the last look at 29 s (clients/deadline.py's edge rule).
        ["GET", "PUT", "GET", "GET", "GET", "DELETE"],
        code="Timeout",
    ),
    ArmFault(
        "a Failed compute whose errors and body carry the key: reported without them",
        {
            "GET": [GONE],
            "PUT": [
                Reply(
                    201,
                    compute("Failed", provisioningErrors=[{"error": {"code": "BadKey", "message": PEM_IN_MESSAGE}}]),
                )
            ],
            "DELETE": [Reply(200)],
        },
        ("BadKey: cannot use key [redacted key]", "detached again"),
        ["GET", "PUT", "DELETE"],
        code="ProvisioningFailed",
    ),
    ArmFault(
        "a Failed compute without errors: no body dumped in their place",
        {"GET": [GONE], "PUT": [Reply(201, compute("Failed"))], "DELETE": [Reply(200)]},
        ("the service gave no reason",),
        ["GET", "PUT", "DELETE"],
        code="ProvisioningFailed",
    ),
    ArmFault(
        "a refusal whose message echoes the request's key",
        {"GET": [GONE], "PUT": [Reply(400, {"error": {"code": "BadRequest", "message": PEM_IN_MESSAGE}})]},
        ("HTTP 400 BadRequest: cannot use key [redacted key]",),
        ["GET", "PUT"],
        code="BadRequest",
    ),
    ArmFault(
        "an answer that is JSON but not an object",
        {"GET": [Reply(200, ["not", "a", "compute"])]},
        ("not a JSON object", "'edge-vm'"),
        ["GET"],
        code="MalformedResponse",
    ),
    ArmFault(
        "an error without ARM's error object: its body is not quoted",
        {"GET": [GONE], "PUT": [Reply(409, {"administratorAccount": {"privateKeyData": VM_KEY.private_pem}})]},
        ("HTTP 409", "no ARM error object"),
        ["GET", "PUT"],
        code="Unknown",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ARM_FAULTS, ids=lambda f: f.name)
def test_arm_faults_fail_with_one_clear_error(arm: ArmEndpoint, fault: ArmFault) -> None:
    for method, replies in fault.replies.items():
        arm.fake.script(method, REF.path, *replies)
    clock = FakeClock()
    transport = arm.transport()
    with client_for(arm.url, transport, clock) as client, pytest.raises(fault.error) as caught:
        client.attach(REF, ATTACHMENT, Deadline(30, clock))
    message = str(caught.value)
    for said in fault.says:
        assert said in message
    assert_clean(message)
    assert caught.value.code == fault.code
    assert [r.method for r in arm.fake.requests] == fault.methods
    assert transport.slept == fault.slept
    assert clock.now <= 30


def test_our_own_compute_from_an_interrupted_create_is_attached_again(arm: ArmEndpoint) -> None:
    """A create that timed out after its PUT leaves our compute behind; the retry may PUT over it."""
    arm.fake.script("GET", REF.path, Reply(200, compute("Failed")))
    arm.fake.script("PUT", REF.path, Reply(200, compute("Succeeded")))
    clock = FakeClock()
    with client_for(arm.url, arm.transport(), clock) as client:
        client.attach(REF, ATTACHMENT, Deadline(30, clock))
    assert [r.method for r in arm.fake.requests] == ["GET", "PUT"]


RAW_ANSWERS = {
    "malformed JSON": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n"
        b'Connection: close\r\n\r\n{"properties": {',
        ("not a JSON object", "'edge-vm'"),
    ),
    "an HTML error page that quotes the key": (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 44\r\nConnection: close\r\n\r\n"
        b"<html>-----BEGIN RSA PRIVATE KEY----- x</html>",
        ("HTTP 400", "no ARM error object"),
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", sorted(RAW_ANSWERS))
def test_bodies_no_stand_in_sends_are_clear_errors(tmp_path: Path, arm: ArmEndpoint, case: str) -> None:
    answer, says = RAW_ANSWERS[case]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "arm.crt", tmp_path / "arm.key")  # serve_arm's certificate
    clock = FakeClock()
    with (
        Listener("answer", context=context, answer=answer) as raw,
        client_for(f"https://127.0.0.1:{raw.port}", arm.transport(), clock) as client,
        pytest.raises(ComputeApiError) as caught,
    ):
        client.get(REF, Deadline(30, clock))
    for said in says:
        assert said in str(caught.value)
    assert_clean(str(caught.value))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tls", [True, False], ids=["silent after TLS", "silent before TLS"])
def test_a_silent_server_costs_the_deadline_not_more(tmp_path: Path, arm: ArmEndpoint, tls: bool) -> None:
    """Real time: the server accepts and never answers. Without transport timeouts the call would
    hang forever (pytest-timeout fails it); with them, within the 1 s deadline plus one attempt."""
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "arm.crt", tmp_path / "arm.key")
    with (
        Listener("silent", context=context) as silent,
        client_for(f"https://127.0.0.1:{silent.port}", arm.transport(), FakeClock()) as client,
        pytest.raises(ComputeApiError) as caught,
    ):
        client.get(REF, Deadline(1.0))
    assert "'edge-vm'" in str(caught.value) and "'mlw-dev'" in str(caught.value)
    assert_clean(str(caught.value))


def test_what_is_logged_of_a_compute_holds_no_credentials(arm: ArmEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    """A GET or PUT answer can carry administratorAccount back; the debug log shows the compute
    with every credential field replaced."""
    answer = compute("Succeeded")
    answer["properties"]["properties"]["administratorAccount"] |= {
        "password": "hunter2",
        "publicKeyData": "ssh-rsa AAAA",
    }
    arm.fake.script("GET", REF.path, GONE)
    arm.fake.script("PUT", REF.path, Reply(200, answer))
    clock = FakeClock()
    with (
        caplog.at_level("DEBUG", logger="components.azureml_computes"),
        client_for(arm.url, arm.transport(), clock) as c,
    ):
        c.attach(REF, ATTACHMENT, Deadline(30, clock))
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "components.azureml_computes")
    assert "'username': 'azureuser'" in logged  # the compute is there...
    for secret in ("hunter2", "ssh-rsa AAAA", *SECRETS):  # ...its credentials are not
        assert secret not in logged


def test_a_failed_handshake_prints_no_traceback_of_paramikos(tmp_path: Path) -> None:
    """paramiko logs a failed handshake with its traceback at ERROR; in a process that configures
    no logging (Pulumi's dynamic provider host), Python's last-resort handler would print that to
    stderr under our one-line error. Run as such a process would."""
    import subprocess
    import sys

    with Listener("hangup") as not_ssh:
        program = (
            "from clients import ssh\n"
            "from clients.deadline import Deadline\n"
            "from components.ssh_preflight import load_private_key\n"
            "import sys\n"
            "key = load_private_key(sys.stdin.read())\n"
            f"try: ssh.connect('127.0.0.1', {not_ssh.port}, 'u', key, None, Deadline(0.5), first_delay=0.1)\n"
            "except ssh.SshUnreachable as error: print(error)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", program],
            input=USER_KEY.private_pem,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert f"no SSH session with 127.0.0.1:{not_ssh.port}" in done.stdout
    assert done.stderr == ""
