"""Two stager processes sharing one cache, against Azurite, with a blob rewritten between them.

The interleaving is forced, not left to chance: stager A pauses on the wire (a proxy holds its
request) after it has staged `data/a.bin` and before its run ends; meanwhile the blob is rewritten and
stager B starts. Then A resumes. Whatever the order the lock imposes, the cache must never record
content it does not hold: each manifest entry's ETag is a version that was uploaded, its SHA-256
is that version's, and the file on disk has that SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from training import emulator
from training.src.edge_train import staging

ROOT = Path(__file__).resolve().parent.parent

STAGER = """
import logging, sys
from pathlib import Path
from azure.storage.blob import BlobServiceClient
from training.src.edge_train import staging

connection, container_name, prefix, cache = sys.argv[1:5]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
service = BlobServiceClient.from_connection_string(connection)
staging.stage_blobs(service.get_container_client(container_name), prefix, Path(cache), workers=1)
print("done", flush=True)
"""


def start_stager(connection: str, container: str, prefix: str, cache: Path) -> Any:
    return subprocess.Popen(
        [sys.executable, "-c", STAGER, connection, container, prefix, str(cache)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Pause:
    """Holds the first GET of one blob on the proxy until `go` is set."""

    def __init__(self, blob: str) -> None:
        self.blob, self.paused, self.go = blob, threading.Event(), threading.Event()

    def __call__(self, method: str, path: str) -> None:
        if method == "GET" and path.endswith("/" + self.blob) and not self.paused.is_set():
            self.paused.set()
            self.go.wait(timeout=120)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("b_prefix", ["data/", "more/"], ids=["same prefix", "another prefix"])
def test_two_stagers_and_a_rewrite_never_leave_a_false_record(tmp_path, azurite, wire, b_prefix) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(f"t{uuid.uuid4().hex[:12]}")
    versions: dict[str, dict[str, str]] = {}  # blob -> ETag -> SHA-256 of what was uploaded with it

    def upload(name: str, data: bytes) -> None:
        etag = container.upload_blob(name, data, overwrite=True).get_blob_properties().etag
        versions.setdefault(name, {})[etag.strip('"')] = sha256(data)  # listings give it unquoted

    upload("data/a.bin", b"1" * 4096)
    upload("data/z.bin", b"z" * 4096)
    upload("more/m.bin", b"m" * 4096)
    cache = tmp_path / "cache"

    pause = wire.on_request = Pause("data/z.bin")
    first = start_stager(emulator.connection_string(wire.proxy.port), container.container_name, "data/", cache)
    second = None
    try:
        assert pause.paused.wait(timeout=60), first.communicate()  # a.bin staged, z.bin next
        upload("data/a.bin", b"2" * 4096)  # same size, new content and ETag
        second = start_stager(azurite.connection_string, container.container_name, b_prefix, cache)
        for line in second.stderr:  # until B waits for A's lock, or (without a lock) has finished
            if "waiting for another stager" in line:
                break
        pause.go.set()
        assert first.wait(timeout=60) == 0, first.stderr.read()
        assert second.wait(timeout=60) == 0
    finally:
        pause.go.set()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    entries = json.loads((cache / staging.MANIFEST).read_text())
    expected = {"data/a.bin", "data/z.bin"} | ({"more/m.bin"} if b_prefix == "more/" else set())
    assert set(entries) == expected  # neither stager lost the other's entries
    for name, entry in entries.items():
        assert entry["etag"] in versions[name], f"{name}: an ETag that was never uploaded"
        assert entry["sha256"] == versions[name][entry["etag"]], f"{name}: a hash that is not its ETag's"
        on_disk = sha256((cache / name).read_bytes())
        assert on_disk == entry["sha256"], f"{name}: the cache records content it does not hold"
    container.delete_container()
