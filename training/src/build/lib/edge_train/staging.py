"""Stage blobs from Hub storage to local disk: in parallel, cached, and never half-written.

- Small blobs download on a thread pool (one request each); a large blob downloads alone with the
  SDK's own parallel ranges (max_concurrency), which is as fast as the SDK gets for one blob.
- A manifest in the destination maps each blob to the ETag it was staged at; a blob whose ETag
  and size are unchanged and whose file is there is not downloaded again.
- Every download goes to a temporary file in the same directory, is fsynced and renamed into
  place; the manifest entry is written only after the rename, so a partial file is never taken
  for a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.storage.blob import BlobProperties, ContainerClient

log = logging.getLogger(__name__)

MANIFEST = ".edge-staging-manifest.json"
LARGE_BLOB_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class StagedBlob:
    name: str
    path: Path
    etag: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class StageResult:
    blobs: tuple[StagedBlob, ...]
    downloaded: int
    reused: int
    bytes_downloaded: int


class StagingError(RuntimeError):
    pass


def _local_path(destination: Path, name: str) -> Path:
    path = (destination / name).resolve()
    if destination.resolve() not in path.parents:
        raise StagingError(f"blob name {name!r} would land outside {destination}")
    return path


class _Manifest:
    def __init__(self, destination: Path) -> None:
        self.path = destination / MANIFEST
        self._lock = threading.Lock()
        self.changed = False
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.entries = {}

    def is_current(self, blob: BlobProperties, path: Path) -> bool:
        entry = self.entries.get(blob.name)
        return (
            entry is not None
            and entry.get("etag") == blob.etag
            and entry.get("size") == blob.size
            and path.is_file()
            and path.stat().st_size == blob.size
        )

    def record(self, blob: BlobProperties, sha256: str | None) -> None:
        with self._lock:
            self.entries[blob.name] = {"etag": blob.etag, "size": blob.size, "sha256": sha256}
            self.changed = True

    def save(self) -> None:
        with self._lock:
            if not self.changed:  # a warm run rewrites nothing
                return
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".manifest-")
            with os.fdopen(fd, "w") as handle:
                json.dump(self.entries, handle)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(self.path)


def _progress(total: int) -> Any:
    """A progress bar on a terminal, nothing in logs and jobs."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="staging")


def _download(
    container: ContainerClient, blob: BlobProperties, path: Path, concurrency: int, on_bytes: Callable[[int], None]
) -> str | None:
    """One blob into `path`, atomically; the content's SHA-256 when it was cheap to compute."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        # Exactly the version that was listed: a blob rewritten meanwhile fails instead of mixing.
        stream = container.download_blob(
            blob.name, etag=blob.etag, match_condition=MatchConditions.IfNotModified, max_concurrency=concurrency
        )
        with os.fdopen(fd, "wb") as handle:
            if blob.size >= LARGE_BLOB_BYTES:
                stream.readinto(handle)
                digest = None  # hashed later, only if a fingerprint asks for it
            else:
                data = stream.readall()
                handle.write(data)
                digest = hashlib.sha256(data).hexdigest()
                expected_md5 = blob.content_settings.content_md5 if blob.content_settings else None
                if expected_md5 and hashlib.md5(data, usedforsecurity=False).digest() != bytes(expected_md5):
                    raise StagingError(f"{blob.name}: content does not match its Content-MD5")
            handle.flush()
            os.fsync(handle.fileno())  # this file only; the workers sync in parallel
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    on_bytes(blob.size)
    return digest


def stage_blobs(
    container: ContainerClient,
    prefix: str,
    destination: Path,
    workers: int = 16,
    large_blob_concurrency: int = 8,
) -> StageResult:
    """Make `destination` hold every blob under `prefix` as it is in storage now."""
    destination.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(destination)
    listed = sorted(container.list_blobs(name_starts_with=prefix), key=lambda b: b.name)
    if not listed:
        raise StagingError(f"no blobs under {container.container_name}/{prefix}")
    paths = {b.name: _local_path(destination, b.name) for b in listed}
    todo = [b for b in listed if not manifest.is_current(b, paths[b.name])]
    moved = 0
    moved_lock = threading.Lock()

    with _progress(sum(b.size for b in todo)) as bar:

        def count(n: int) -> None:
            nonlocal moved
            with moved_lock:
                moved += n
            if bar is not None:
                bar.update(n)

        def fetch(blob: BlobProperties, concurrency: int) -> None:
            manifest.record(blob, _download(container, blob, paths[blob.name], concurrency, count))

        try:
            small = [b for b in todo if b.size < LARGE_BLOB_BYTES]
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
                for future in [pool.submit(fetch, b, 1) for b in small]:
                    future.result()
            for blob in (b for b in todo if b.size >= LARGE_BLOB_BYTES):
                fetch(blob, large_blob_concurrency)
        finally:
            manifest.save()  # whatever completed stays cached, even when something failed

    reused = len(listed) - len(todo)
    log.info("staged %d blobs: %d downloaded (%d bytes), %d reused", len(listed), len(todo), moved, reused)
    return StageResult(
        blobs=tuple(
            StagedBlob(b.name, paths[b.name], b.etag, b.size, manifest.entries[b.name].get("sha256")) for b in listed
        ),
        downloaded=len(todo),
        reused=reused,
        bytes_downloaded=moved,
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(blobs: Iterable[StagedBlob]) -> str:
    """SHA-256 over the sorted names and content hashes: the same data gives the same fingerprint."""
    lines = sorted(f"{b.name}\t{b.sha256 or _file_sha256(b.path)}" for b in blobs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
