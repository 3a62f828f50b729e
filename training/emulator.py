"""Azurite, the Azure Storage emulator, for the local demo and the tests: 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
LISTENING = re.compile(rf"listens on http://{re.escape(LOOPBACK)}:(\d+)")
CLOSED = re.compile(r"Blob service successfully closed")
# Azurite's development account: public, fixed and documented by Microsoft; not a secret.
ACCOUNT = "devstoreaccount1"
log = logging.getLogger(__name__)
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
    """A running emulator; a context manager that stops its whole process group on exit.

    Started at once and waited for at the first use of its port: Node takes about a second to
    start, which the caller may spend on other work (the demo imports the blob SDK meanwhile)."""

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

    @functools.cached_property
    def port(self) -> int:
        """Once it listens: it prints the port, or exits."""
        for line in self.process.stdout or ():
            if match := LISTENING.search(line):
                return int(match.group(1))
        self.process.wait()
        raise EmulatorError(f"Azurite exited with {self.process.returncode} before listening")

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def stop(self, deadline_s: float = 10.0) -> None:
        """SIGTERM first: Azurite then closes its metadata store, which saves it (so data survives
        to the next run), and prints CLOSED. Its HTTP server would go on waiting for clients'
        keep-alive connections, so once that line is out the group is killed: no fixed wait.
        (Stopped in its first moments, before Azurite handles the signal, Node just ends.)"""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        else:
            if self._wait_for_line(CLOSED, deadline_s) == "timeout":
                log.warning("Azurite did not report closing within %.0fs; killing it", deadline_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def _wait_for_line(self, pattern: re.Pattern[str], deadline_s: float) -> Literal["seen", "ended", "timeout"]:
        """Read the emulator's output until it matches, ends, or the deadline passes. Raw reads:
        a text stream's read-ahead could hold the line while select() waits for more."""
        stream = self.process.stdout
        if stream is None:
            return "ended"
        deadline = time.monotonic() + deadline_s
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stream.fileno(), selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(left):
                    return "timeout"
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    return "ended"
                seen += chunk
                if pattern.search(seen.decode(errors="replace")):
                    return "seen"
        return "timeout"

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
