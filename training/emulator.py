"""Azurite, the Azure Storage emulator, for the local demo and the tests: 127.0.0.1 only."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
LISTENING = re.compile(rf"listens on http://{re.escape(LOOPBACK)}:(\d+)")
# Azurite's development account: public, fixed and documented by Microsoft; not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class EmulatorError(RuntimeError):
    pass


def binary() -> Path:
    path = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise EmulatorError(f"{path} is missing: run scripts/setup (it installs Azurite from package-lock.json)")
    return path


def command(location: Path) -> list[str]:
    """Azurite's blob service on 127.0.0.1 and a port the OS picks (it prints which)."""
    return [
        str(binary()),
        "--blobHost",
        LOOPBACK,
        "--blobPort",
        "0",
        "--location",
        str(location),
        "--silent",
        "--skipApiVersionCheck",  # the SDK may be newer than the emulator's list of API versions
    ]


def blob_endpoint(port: int) -> str:
    return f"http://{LOOPBACK}:{port}/{ACCOUNT}"


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={blob_endpoint(port)};"
    )


class Azurite:
    """A running emulator; a context manager that stops its whole process group on exit."""

    def __init__(self, location: Path) -> None:
        location.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            command(location),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        output = self.process.stdout or ()
        for line in output:  # it prints the port once it listens, or exits
            if match := LISTENING.search(line):
                self.port = int(match.group(1))
                break
        else:
            self.process.wait()
            raise EmulatorError(f"Azurite exited with {self.process.returncode} before listening")

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def stop(self, grace_seconds: float = 1.0) -> None:
        """SIGTERM first: Azurite saves its metadata at once, which keeps data across runs. Its
        server then waits for clients' keep-alive connections, so after a short grace, SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace_seconds)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
