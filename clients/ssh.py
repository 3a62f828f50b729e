"""The one place that speaks SSH: connect with the host key pinned, run commands with timeouts.

Everything is bounded by one `Deadline`:
- TCP, the SSH handshake and the sign-in are retried together with backoff until the deadline.
  A VM whose sshd is still starting (connection refused, reset, no banner yet) or whose admin key
  is not installed yet (cloud-init) is waited for, not failed at once. A host key that does not
  match is never retried: that is not a VM still booting.
- Every phase of one attempt (TCP connect, banner, key exchange, authentication) gets at most
  what is left of the deadline, so a listener that accepts TCP and never speaks SSH costs the
  deadline, not paramiko's fixed 15 s banner timeout per phase.
- Every remote command has a timeout; a command that does not finish in time is abandoned (its
  channel closed) and reported by name.

Host keys: an SSH server offers one host key per algorithm family (OpenSSH: ed25519, ECDSA, RSA)
and the client negotiates one of them, paramiko preferring ed25519 (`Transport._preferred_keys`).
A correct RSA fingerprint must therefore not be refused just because the VM also offers ed25519:
when the negotiated key does not match, each other family is asked for its key, and the
connection is made again with the matching family pinned. The expected key is never weakened:
the connection proceeds only with a key whose fingerprint is the expected one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import paramiko

from clients.deadline import Deadline, Sleep, retry_until

log = logging.getLogger(__name__)
# paramiko logs a failed handshake with its traceback at ERROR; with no handler configured, Python's
# last-resort handler would print it to stderr, under the clear error this module raises. A
# NullHandler keeps it out of the user's output; applications that configure logging still see it.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Host key algorithm families, as paramiko names the algorithms it accepts for each
# (`Transport._preferred_keys` of paramiko 5); the family is what a fingerprint identifies.
HOST_KEY_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
CONNECT_TIMEOUT = 10.0
"""At most this per TCP connect attempt (less when the deadline is nearer)."""
OUTPUT_LIMIT = 1 << 20
"""Bytes kept of a command's stdout and of its stderr; the rest is read and dropped."""


class SshError(RuntimeError):
    """SSH to `address:port` failed; the subclasses say how."""

    def __init__(self, address: str, port: int, message: str) -> None:
        self.address, self.port = address, port
        super().__init__(message)


class SshUnreachable(SshError):
    """No SSH session could be set up before the deadline (TCP refused, no banner, handshake failed)."""


class SshAuthRefused(SshError):
    """The server kept refusing the key until the deadline."""


class HostKeyMismatch(SshError):
    """No host key the server offers has the expected fingerprint. Never retried."""

    def __init__(self, address: str, port: int, expected: str, offered: Mapping[str, str]) -> None:
        self.expected, self.offered = expected, dict(offered)
        seen = ", ".join(f"{family} {fp}" for family, fp in offered.items()) or "none"
        super().__init__(address, port, f"{address}:{port} offers host keys {seen}; none is the expected {expected}")


class CommandTimedOut(SshError):
    """A remote command did not finish within its timeout."""

    def __init__(self, address: str, port: int, command: str, seconds: float) -> None:
        self.command, self.seconds = command, seconds
        super().__init__(address, port, f"`{command}` on {address} did not finish within {seconds:.1f}s")


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256 fingerprint as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def family_of(key: paramiko.PKey) -> str:
    name = key.get_name()
    return next((family for family, names in HOST_KEY_FAMILIES.items() if name in names), name)


def _only(family: str | None) -> dict[str, list[str]]:
    """paramiko's `disabled_algorithms` that leave only `family`'s host key algorithms."""
    if family is None:
        return {}
    return {"keys": [name for f, names in HOST_KEY_FAMILIES.items() if f != family for name in names]}


def _handshake(address: str, port: int, deadline: Deadline, family: str | None) -> paramiko.Transport:
    """TCP and the SSH key exchange, each bounded by what is left of `deadline`; no authentication."""
    sock = socket.create_connection((address, port), timeout=deadline.cap(CONNECT_TIMEOUT))
    transport = paramiko.Transport(sock, disabled_algorithms=_only(family))
    # paramiko's own defaults (15 s banner, 15 s handshake, 30 s auth) would each outlast a short
    # deadline; all three get what is left.
    transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = deadline.cap(3600)
    try:
        transport.start_client(timeout=deadline.cap(3600))
        # start_client returns without error when its timeout passes mid-exchange; this raises
        # SSHException("No existing session") unless the key exchange finished.
        transport.get_remote_server_key()
    except BaseException:
        transport.close()
        raise
    return transport


def offered_host_keys(address: str, port: int, deadline: Deadline) -> dict[str, str]:
    """Fingerprint of every host key family the server offers (one handshake per family, no sign-in)."""
    offered: dict[str, str] = {}
    for family in HOST_KEY_FAMILIES:
        try:
            transport = _handshake(address, port, deadline, family)
        except paramiko.IncompatiblePeer:
            continue  # the server has no key of this family
        try:
            offered[family] = fingerprint(transport.get_remote_server_key())
        finally:
            transport.close()
    return offered


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: str
    stderr: str


class SshSession:
    """An authenticated connection whose host key was checked. Close it (or use `with`)."""

    def __init__(self, transport: paramiko.Transport, address: str, port: int) -> None:
        self._transport = transport
        self.address, self.port = address, port
        key = transport.get_remote_server_key()
        self.host_key_fingerprint = fingerprint(key)
        self.host_key_family = family_of(key)

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def run(self, command: str, timeout: float, stdin: str | None = None) -> CommandResult:
        """Run `command`, with `stdin` (then end of input) when given: the way to hand a command a
        secret, which then appears on no command line. Raise `CommandTimedOut` if it has not exited
        within `timeout` seconds (opening the channel, the output and the exit status all count)."""
        deadline = Deadline(timeout)
        try:
            channel = self._transport.open_session(timeout=deadline.cap(timeout))
        except (paramiko.SSHException, OSError) as error:
            if deadline.expired():
                raise CommandTimedOut(self.address, self.port, command, timeout) from None
            raise SshUnreachable(
                self.address, self.port, f"{self.address}: could not open a session ({error})"
            ) from None
        with contextlib.closing(channel):  # closing abandons a command that is still running
            out, err = bytearray(), bytearray()
            try:
                channel.settimeout(deadline.cap(timeout))
                channel.exec_command(command)
                if stdin is not None:
                    channel.sendall(stdin.encode())
                    channel.shutdown_write()
                # Read stdout to its end, then wait for the exit status. The commands run here
                # write little to stderr; it is buffered by paramiko meanwhile.
                while chunk := channel.recv(65536):  # blocks at most the channel's timeout
                    out += chunk[: max(0, OUTPUT_LIMIT - len(out))]
                    if deadline.expired():
                        raise TimeoutError
                    channel.settimeout(deadline.cap(timeout))
                if not channel.status_event.wait(deadline.remaining()):
                    raise TimeoutError
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)[: max(0, OUTPUT_LIMIT - len(err))]
            except TimeoutError:  # socket.timeout is TimeoutError
                raise CommandTimedOut(self.address, self.port, command, timeout) from None
            status = channel.recv_exit_status()
        return CommandResult(status, out.decode(errors="replace").strip(), err.decode(errors="replace").strip())


@dataclass
class _Attempts:
    """What the attempts of `connect` saw, for the error at the deadline."""

    last_error: str = "no attempt finished"
    auth_refused: bool = False
    family: str | None = None
    session: SshSession | None = field(default=None, repr=False)


def connect(
    address: str,
    port: int,
    username: str,
    key: paramiko.PKey,
    expected_fingerprint: str | None,
    deadline: Deadline,
    sleep: Sleep = time.sleep,
    first_delay: float = 1.0,
) -> SshSession:
    """An authenticated session with a host key whose fingerprint is `expected_fingerprint` (any
    key on first use, when it is None), retrying TCP, handshake and sign-in with backoff until
    `deadline`. Raises `HostKeyMismatch` at once, `SshAuthRefused` or `SshUnreachable` at the deadline."""
    seen = _Attempts()

    def attempt() -> bool:
        try:
            transport = _handshake(address, port, deadline, seen.family)
        except paramiko.IncompatiblePeer as error:
            seen.last_error, seen.family = f"no common host key algorithm ({error})", None
            return False
        except (paramiko.SSHException, OSError, EOFError) as error:
            seen.last_error, seen.auth_refused = _describe(error), False
            return False
        try:
            presented = fingerprint(transport.get_remote_server_key())
            if expected_fingerprint is not None and presented != expected_fingerprint:
                offered = offered_host_keys(address, port, deadline)
                match = next((f for f, fp in offered.items() if fp == expected_fingerprint), None)
                if match is None or match == seen.family:
                    raise HostKeyMismatch(address, port, expected_fingerprint, offered)
                log.info("%s:%s: the expected host key is its %s key; pinning that family", address, port, match)
                seen.family = match
                transport.close()
                return attempt()
            transport.auth_publickey(username, key)
        except paramiko.AuthenticationException as error:
            transport.close()
            seen.last_error, seen.auth_refused = _describe(error), True
            return False
        except (paramiko.SSHException, OSError, EOFError) as error:
            transport.close()
            seen.last_error, seen.auth_refused = _describe(error), False
            return False
        except BaseException:
            transport.close()
            raise
        seen.session = SshSession(transport, address, port)
        return True

    if retry_until(attempt, deadline, sleep, first_delay=first_delay) and seen.session is not None:
        return seen.session
    if seen.auth_refused:
        raise SshAuthRefused(
            address,
            port,
            f"{username}@{address}:{port} refused the key until the {deadline.seconds:g}s deadline ({seen.last_error})",
        )
    raise SshUnreachable(
        address, port, f"no SSH session with {address}:{port} within {deadline.seconds:g}s ({seen.last_error})"
    )


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."
