"""Real services for tests, on 127.0.0.1 only: Azurite (blob) and an OpenSSH server.

Each service runs in its own process group and is stopped by killing the group; `stop()` then
checks that no process of the group is left, so a leak fails the test that caused it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.harness.keys import KeyPair
from training import emulator

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = emulator.LOOPBACK
STARTUP_SECONDS = 30.0

_RUNNING: set[Service] = set()


class ServiceError(RuntimeError):
    pass


@dataclass(eq=False)
class Service:
    name: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _RUNNING.add(self)

    def wait_for_line(self, pattern: re.Pattern[str], deadline_s: float = STARTUP_SECONDS) -> re.Match[str]:
        """Read the service's output until a line matches; fail if it exits or the deadline passes."""
        found: list[re.Match[str]] = []
        done = threading.Event()

        def reader() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.log.append(line.rstrip())
                if not found and (match := pattern.search(line)):
                    found.append(match)
                    done.set()
            done.set()  # output closed: the process ended

        threading.Thread(target=reader, name=f"{self.name}-output", daemon=True).start()
        if not done.wait(deadline_s) or not found:
            self.stop()
            tail = "\n".join(self.log[-20:])
            raise ServiceError(f"{self.name} did not start within {deadline_s:.0f}s:\n{tail}")
        return found[0]

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the whole process group and verify that nothing of it is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        _wait_group_gone(self.process.pid, self.name)
        _RUNNING.discard(self)


def _wait_group_gone(pgid: int, name: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > end:
            os.killpg(pgid, signal.SIGKILL)
            raise ServiceError(f"{name}: processes of group {pgid} were still running after stop")
        time.sleep(0.05)


def running_services() -> list[str]:
    """Names of services started and not yet stopped (for the end-of-suite leak check)."""
    return sorted(s.name for s in _RUNNING if s.process.poll() is None)


def _spawn(name: str, argv: Sequence[str | os.PathLike[str]]) -> Service:
    process = subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    return Service(name, process)


# --- Azurite ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Azurite:
    service: Service
    port: int
    location: Path

    @property
    def blob_endpoint(self) -> str:
        return emulator.blob_endpoint(self.port)

    @property
    def connection_string(self) -> str:
        return emulator.connection_string(self.port)

    def stop(self) -> None:
        # Azurite's graceful stop waits for clients' keep-alive connections; its data is
        # throwaway here, so it gets a short grace before the kill.
        self.service.stop(grace_s=1.0)


def read_list_sas(container: str) -> str:
    """A SAS token for reading and listing one of Azurite's containers, valid for an hour."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        emulator.ACCOUNT,
        container,
        account_key=emulator.ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def start_azurite(location: Path, tls: tuple[Path, Path] | None = None) -> Azurite:
    """Azurite's blob service on 127.0.0.1 and a port the OS picks, data under `location`; over
    HTTPS with `tls` (certificate and key PEM files), as a Hub's blob endpoint is."""
    location.mkdir(parents=True, exist_ok=True)
    argv = emulator.command(location) + (["--cert", str(tls[0]), "--key", str(tls[1])] if tls else [])
    service = _spawn("azurite", argv)
    match = service.wait_for_line(re.compile(r"listens on https://127\.0\.0\.1:(\d+)") if tls else emulator.LISTENING)
    return Azurite(service=service, port=int(match.group(1)), location=location)


# --- OpenSSH ------------------------------------------------------------------------------------

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    service: Service
    port: int
    user: str
    host_key_fingerprint: str
    """SHA256 fingerprint of the server's host key, as ssh-keygen -lf prints it."""
    host_public_key: str
    directory: Path
    host_key_fingerprints: dict[str, str] = field(default_factory=dict)
    """Every host key the server offers, by type (ed25519, rsa, ...): the first is `host_key_fingerprint`."""

    def stop(self) -> None:
        self.service.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _fingerprint(public_key_file: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def start_sshd(
    directory: Path,
    authorized_keys: Iterable[KeyPair],
    path: Sequence[Path | str] = ("/usr/local/bin", "/usr/bin", "/bin"),
    host_key_types: Sequence[str] = ("ed25519",),
    port: int | None = None,
) -> SshServer:
    """OpenSSH's sshd on 127.0.0.1, key authentication only, for the user running the tests.

    `path` becomes PATH in the sessions, so a test can put shims (a fake `docker`) first or leave
    a command out. `host_key_types` are the host keys it offers (ssh-keygen -t names); `port`, when
    given, is the port it must take (a test that holds a port for a server that starts late).
    """
    if not SSHD.exists():
        raise ServiceError(f"{SSHD} is missing: run scripts/setup (it installs openssh-server)")
    directory.mkdir(parents=True, exist_ok=True)
    host_keys = [directory / f"ssh_host_{kind}_key" for kind in host_key_types]
    for kind, host_key in zip(host_key_types, host_keys, strict=True):
        if not host_key.exists():
            # RSA at 2048 bits: a test host key, made in a fraction of the default 3072-bit key's time.
            size = ["-b", "2048"] if kind == "rsa" else []
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", "test-host", "-f", str(host_key)], check=True
            )
    authorized = directory / "authorized_keys"
    authorized.write_text("".join(f"{k.public_openssh}\n" for k in authorized_keys))
    authorized.chmod(0o600)
    user = getpass.getuser()
    if os.geteuid() == 0:
        # sshd refuses to start as root without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    requested_port = port
    last_error: ServiceError | None = None
    for _attempt in range(3):  # another process may take the free port before sshd binds it
        port = _free_port() if requested_port is None else requested_port
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {LOOPBACK}",
                    *(f"HostKey {host_key}" for host_key in host_keys),
                    f"PidFile {directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                    # HOME in the server's own directory: the sessions' shell is the user's login
                    # shell, and Debian's bash sources ~/.bashrc for every command sshd runs; the
                    # runner's own (pyenv init here: ~0.25 s per command) is no part of the test.
                    f"SetEnv PATH={':'.join(str(p) for p in path)} HOME={directory}",
                    "",
                ]
            )
        )
        service = _spawn("sshd", [SSHD, "-D", "-e", "-f", config])
        try:
            service.wait_for_line(re.compile(rf"Server listening on {re.escape(LOOPBACK)} port {port}"))
        except ServiceError as error:
            last_error = error
            if "Address already in use" in "\n".join(service.log) and requested_port is None:
                continue
            raise
        host_pub = host_keys[0].with_suffix(".pub")
        return SshServer(
            service=service,
            port=port,
            user=user,
            host_key_fingerprint=_fingerprint(host_pub),
            host_public_key=host_pub.read_text().strip(),
            directory=directory,
            host_key_fingerprints={
                kind: _fingerprint(key.with_suffix(".pub")) for kind, key in zip(host_key_types, host_keys, strict=True)
            },
        )
    raise ServiceError(f"sshd could not bind a free port: {last_error}")


def write_shim(directory: Path, name: str, script: str) -> Path:
    """An executable shell script `name` in `directory` (e.g. a fake docker)."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / name
    shim.write_text("#!/bin/sh\n" + script)
    shim.chmod(0o755)
    return shim


def restricted_bin(directory: Path, commands: Iterable[str]) -> Path:
    """A directory with links to only `commands`, to serve as a PATH from which others are absent."""
    directory.mkdir(parents=True, exist_ok=True)
    for command in commands:
        target = shutil.which(command)
        if target is None:
            raise ServiceError(f"{command} is not installed")
        link = directory / command
        if not link.exists():
            link.symlink_to(target)
    return directory


# --- shellcheck -----------------------------------------------------------------------------------


def shellcheck(scripts: Mapping[str, str], directory: Path) -> str:
    """shellcheck's findings on every script (name -> text), in one run: each run of it costs most
    of a second before it reads a line. Empty when all pass; each finding names its script's file."""
    import shutil

    if shutil.which("shellcheck") is None:
        raise ServiceError("shellcheck is not installed (Debian package shellcheck; scripts/setup installs it)")
    paths = []
    for name, text in scripts.items():
        path = directory / f"{name}.sh"
        path.write_text(text)
        paths.append(str(path))
    result = subprocess.run(["shellcheck", "-s", "bash", *paths], capture_output=True, text=True, timeout=120)
    return "" if result.returncode == 0 else result.stdout + result.stderr
