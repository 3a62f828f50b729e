"""Stage blobs from Hub storage to local disk: in parallel, cached, never half-written, one writer.

- One stager at a time per cache: an exclusive `flock` on `<cache>/.edge-staging.lock`, held from
  the listing to the manifest write, so two processes sharing a cache (or staging different
  prefixes into it) never interleave their reads and writes of the manifest and files. A wait for
  the lock has a deadline.
- A manifest in the cache maps each blob to the ETag, size and SHA-256 it was staged at; a blob
  whose ETag and size are unchanged and whose file is there is not downloaded again. Blobs no
  longer listed under the prefix are pruned. A manifest that cannot be read as one is discarded
  with a warning (the cache is re-staged) rather than trusted.
- Every download goes to a short-named file in `<cache>/.edge-staging-tmp/` and is renamed into
  place when complete; temporary files left by a killed run are swept at the next start (the lock
  guarantees nobody else is writing them). The downloaded bytes are exactly the listed version:
  every GET carries the listed ETag as an If-Match precondition, and the content is checked
  against the blob's Content-MD5 when it has one.
- Durability costs one sync per run, not one per blob: files are written and renamed, then the
  cache's filesystem is synced once (`syncfs`), then the manifest is written and synced last, so
  the manifest never vouches for a file that a crash could lose.
- Small blobs download on `workers` threads (one GET each). Large blobs are cut into ranges that
  `large_blob_concurrency` threads fetch across all large blobs at once (a bandwidth budget, so
  several large blobs proceed in parallel), written in place with `pwrite`, and hashed in order
  while the later ranges are still in flight. The first failure cancels what has not started.
- Listing and reads go over reader.BlobReader, a pool of libcurl connections with Shared Key or SAS
  auth, not through the SDK's pipeline: a small fraction of the CPU per request (see reader.py).
  The container client passed in supplies the URL, the API version and the credential.
- Every failure is one StagingError naming the blob (or the cache file) it concerns.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deadline import Deadline, poll_until
from .reader import BlobChanged, BlobGone, BlobReader, BlobReadError, ListedBlob, UnsupportedCredential

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

MANIFEST = ".edge-staging-manifest.json"
LOCK = ".edge-staging.lock"
TEMPORARY = ".edge-staging-tmp"
RESERVED = frozenset({MANIFEST, LOCK, TEMPORARY})
LARGE_BLOB_BYTES = 32 * 1024 * 1024
# Twice the SDK's default chunk (max_chunk_get_size, 4 MiB): half the requests, measured faster
# here (bench/stage_blobs.py), and 8 in flight stay well under the 200 MiB peak-RSS budget.
RANGE_BYTES = 8 * 1024 * 1024
HASH_READ_BYTES = 1024 * 1024
LOCK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class StagedBlob:
    name: str
    root: Path
    """The cache it was staged into."""
    etag: str
    size: int
    sha256: str | None

    @property
    def path(self) -> Path:
        """The local file (made on use: thousands of Path objects cost a warm run more than its stats)."""
        return self.root / self.name


@dataclass(frozen=True)
class StageResult:
    blobs: tuple[StagedBlob, ...]
    downloaded: int
    reused: int
    bytes_downloaded: int
    pruned: int = 0


class StagingError(RuntimeError):
    pass


_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE)


def _describe(error: BaseException) -> str:
    """An error as one line without secrets: a transport's message may carry the URL, SAS signature included."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return _SAS_SIGNATURE.sub(r"\1REDACTED", text)


def _blob_error(name: str, error: BaseException) -> StagingError:
    if isinstance(error, StagingError):
        return error
    if isinstance(error, BlobChanged):
        return StagingError(
            f"blob {name!r} changed while it was being staged (its ETag no longer matches): stage again"
        )
    if isinstance(error, BlobGone):
        return StagingError(f"blob {name!r} was deleted while it was being staged: stage again")
    return StagingError(f"blob {name!r}: {_describe(error)}")


def _relative_path(name: str, name_max: int) -> str:
    """The blob's path under the cache, judged on the name alone (no filesystem call per blob)."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in name:
        raise StagingError(f"blob name {name!r} would land outside the cache (empty, '.' or '..' path segment)")
    if parts[0] in RESERVED:
        raise StagingError(f"blob name {name!r} collides with the staging cache's own {parts[0]}")
    for part in parts:
        # UTF-8 takes at most 4 bytes a character: most names need no encoding to be judged.
        if len(part) * 4 > name_max and len(os.fsencode(part)) > name_max:
            raise StagingError(
                f"blob name {name!r} has a path segment longer than {name_max} bytes, the file-name limit"
            )
    return name


def _local_path(destination: Path, name: str) -> Path:
    """Where a blob lands; a StagingError if the name would leave `destination`."""
    return destination / _relative_path(name, 255)


def _check_file_directory_clashes(names: Iterable[str]) -> None:
    """`a` and `a/b` cannot both be files: refuse before anything is downloaded."""
    files = set(names)
    for name in files:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise StagingError(f"blob {name!r} needs {parent!r} to be a directory, but {parent!r} is a blob too")


# --- the lock and the manifest ---------------------------------------------------------------------


@contextlib.contextmanager
def _cache_lock(root: Path, timeout_s: float) -> Iterator[None]:
    path = root / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise StagingError(f"cannot open the cache lock {path}: {_describe(error)}") from error

    def take() -> bool | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return None

    try:
        if not take():
            log.info("waiting for another stager that holds %s", path)
            # flock has no timed wait: polled, backing off up to half a second, by the deadline rule.
            if poll_until(take, Deadline(timeout_s), first_delay=0.01, max_delay=0.5) is None:
                raise StagingError(f"another stager held {path} for more than {timeout_s:.0f}s; is one stuck?")
        yield
    finally:
        os.close(fd)  # releases the lock


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("etag"), str)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("sha256"), str | None)
    )


class _Manifest:
    """The cache's record of what it holds; only ever used under the cache lock."""

    def __init__(self, root: Path) -> None:
        self.path = root / MANIFEST
        self.changed = False
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            loaded = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (ValueError, UnicodeDecodeError) as error:
            log.warning(
                "discarding the unreadable staging manifest %s (%s): every blob is staged again", self.path, error
            )
            return
        except OSError as error:
            raise StagingError(f"cannot read the staging manifest {self.path}: {_describe(error)}") from error
        if not isinstance(loaded, dict):
            log.warning("discarding the staging manifest %s: not a JSON object; every blob is staged again", self.path)
            return
        self.entries = {name: entry for name, entry in loaded.items() if _valid_entry(entry)}

    def is_current(self, blob: ListedBlob, path: str) -> bool:
        entry = self.entries.get(blob.name)
        if entry is None or entry["etag"] != blob.etag or entry["size"] != blob.size:
            return False
        try:
            status = os.stat(path)  # noqa: PTH116 (one system call per blob on a warm run; no Path)
        except OSError:
            return False
        return stat.S_ISREG(status.st_mode) and status.st_size == blob.size

    def record(self, blob: ListedBlob, sha256: str) -> None:
        self.entries[blob.name] = {"etag": blob.etag, "size": blob.size, "sha256": sha256}
        self.changed = True

    def forget(self, name: str) -> None:
        del self.entries[name]
        self.changed = True

    def save(self) -> None:
        """Written last, atomically and durably: a crash leaves the old manifest or the new one."""
        if not self.changed:  # a warm run writes nothing
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".manifest-", suffix=".partial")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(self.entries, handle, separators=(",", ":"))
                    handle.flush()
                    os.fsync(handle.fileno())
                Path(tmp).replace(self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_directory(self.path.parent)
        except OSError as error:
            raise StagingError(f"cannot write the staging manifest {self.path}: {_describe(error)}") from error
        self.changed = False


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_filesystem(root: Path) -> None:
    """Flush every file written and renamed in this run with one call instead of one fsync each.
    syncfs(2) syncs only the filesystem holding the cache; os.sync is the fallback off Linux."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(root))
    finally:
        os.close(fd)


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _sweep_temporary(directory: Path) -> None:
    """Partial downloads of a run that was killed: nobody else writes here while we hold the lock."""
    try:
        stale = list(os.scandir(directory))
    except FileNotFoundError:
        stale = []
    except OSError as error:
        raise StagingError(f"cannot read {directory}: {_describe(error)}") from error
    for entry in stale:
        with contextlib.suppress(FileNotFoundError):
            Path(entry.path).unlink()
    if stale:
        log.info("removed %d partial downloads left by an interrupted run", len(stale))
    try:
        directory.mkdir(exist_ok=True)
    except OSError as error:
        raise StagingError(f"cannot create {directory}: {_describe(error)}") from error


def _prune(manifest: _Manifest, root: Path, prefix: str, listed: set[str]) -> int:
    """Files of blobs that are gone from the prefix, and the directories they leave empty."""
    gone = [name for name in manifest.entries if name.startswith(prefix) and name not in listed]
    for name in gone:
        path = root / name
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            pass  # something else lives there now; it is not ours to remove
        except OSError as error:
            raise StagingError(
                f"cannot remove {path}, the file of deleted blob {name!r}: {_describe(error)}"
            ) from error
        manifest.forget(name)
        parent = path.parent
        while parent != root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    if gone:
        log.info("pruned %d blobs no longer under %r", len(gone), prefix)
    return len(gone)


# --- downloads -------------------------------------------------------------------------------------


class _ContentCheck:
    """SHA-256 of the content, and MD5 only when the blob has a Content-MD5 to hold it against."""

    def __init__(self, blob: ListedBlob) -> None:
        self.blob = blob
        self.sha256 = hashlib.sha256()
        self.expected_md5 = blob.content_md5
        self.md5 = hashlib.md5(usedforsecurity=False) if self.expected_md5 else None

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)

    def finish(self) -> str:
        if self.md5 is not None and self.md5.digest() != self.expected_md5:
            raise StagingError(f"blob {self.blob.name!r}: the content does not match its Content-MD5")
        return self.sha256.hexdigest()


class _Run:
    """One staging run's downloads: shared state for the worker threads."""

    def __init__(self, reader: BlobReader, root: Path, manifest: _Manifest, bar: Any) -> None:
        self.reader = reader
        self.root = root
        self.temporary = root / TEMPORARY
        self.manifest = manifest
        self.bar = bar
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.first_failure: StagingError | None = None
        self.bytes = 0
        self.renamed = 0

    def _temporary_file(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.temporary, suffix=".partial")
        return fd, Path(name)

    def _commit(self, blob: ListedBlob, tmp: Path, sha256: str) -> None:
        tmp.replace(self.root / blob.name)
        with self.lock:
            self.manifest.record(blob, sha256)
            self.renamed += 1
            self.bytes += blob.size
        if self.bar is not None:
            self.bar.update(blob.size)

    def small(self, blob: ListedBlob) -> None:
        if self.stop.is_set():
            return
        tmp: Path | None = None
        try:
            data = self.reader.get_whole(blob, stop=self.stop)  # exactly the listed size, or an error
            check = _ContentCheck(blob)
            check.update(data)
            sha256 = check.finish()
            fd, tmp = self._temporary_file()
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            self._commit(blob, tmp, sha256)
        except BaseException as error:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise self.fail(_blob_error(blob.name, error)) from error

    def fail(self, error: StagingError) -> StagingError:
        """Stop the run; the first failure is the one reported (later ones may be its echoes)."""
        with self.lock:
            if self.first_failure is None:
                self.first_failure = error
        self.stop.set()
        return error

    def large(self, blob: ListedBlob) -> _LargeDownload:
        try:
            fd, tmp = self._temporary_file()
        except OSError as error:
            raise _blob_error(blob.name, error) from error
        return _LargeDownload(self, blob, fd, tmp)


class _LargeDownload:
    """One large blob as ranges: written in place, hashed in order as the front of the file fills."""

    def __init__(self, run: _Run, blob: ListedBlob, fd: int, tmp: Path) -> None:
        self.run, self.blob, self.fd, self.tmp = run, blob, fd, tmp
        self.ranges = max(1, -(-blob.size // RANGE_BYTES))
        self.check = _ContentCheck(blob)
        self.done: set[int] = set()
        self.hashed = 0  # ranges [0, hashed) are in the digest
        self.state = threading.Lock()
        self.hashing = threading.Lock()
        self.committed = False

    def fetch(self, index: int) -> None:
        if self.run.stop.is_set():
            return  # something failed: the rest of the pending work is abandoned
        try:
            offset = index * RANGE_BYTES
            length = min(RANGE_BYTES, self.blob.size - offset)
            data = self.run.reader.get(self.blob.name, self.blob.etag, offset, length, stop=self.run.stop)
            view = memoryview(data)
            while view:
                view = view[os.pwrite(self.fd, view, offset + (length - len(view))) :]
            with self.state:
                self.done.add(index)
                complete = len(self.done) == self.ranges
            self._hash_front(wait_for_turn=complete, own=(index, data))
            if complete:
                sha256 = self.check.finish()
                os.close(self.fd)  # no other range of this blob is in flight any more
                self.fd = -1
                self.run._commit(self.blob, self.tmp, sha256)
                self.committed = True
        except BaseException as error:
            raise self.run.fail(_blob_error(self.blob.name, error)) from error

    def _hash_front(self, wait_for_turn: bool, own: tuple[int, bytes]) -> None:
        """Hash the ranges that are now contiguous from the start. Whoever holds `hashing` does it;
        the thread completing the last range waits its turn so nothing is left unhashed. Its own
        range, still in memory, is hashed from there; the others are read back from the file."""
        if not self.hashing.acquire(blocking=wait_for_turn):
            return
        try:
            while True:
                with self.state:
                    if self.hashed not in self.done:
                        return
                    index = self.hashed
                if index == own[0]:
                    self.check.update(own[1])
                    with self.state:
                        self.hashed = index + 1
                    continue
                offset = index * RANGE_BYTES
                end = min(offset + RANGE_BYTES, self.blob.size)
                while offset < end:  # from the page cache, just written; hashlib releases the GIL
                    chunk = os.pread(self.fd, min(HASH_READ_BYTES, end - offset), offset)
                    if not chunk:
                        raise StagingError(f"blob {self.blob.name!r}: short read at offset {offset}")
                    self.check.update(chunk)
                    offset += len(chunk)
                with self.state:
                    self.hashed = index + 1
        finally:
            self.hashing.release()

    def discard(self) -> None:
        """After the pools have stopped (no thread writes to the file any more)."""
        if self.committed:
            return
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def _progress(total: int) -> Any:
    """A progress bar on a terminal, nothing in logs and jobs."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="staging")


def _check_space(root: Path, todo: list[ListedBlob]) -> None:
    """Before any range is planned: what is to be downloaded must fit on the cache's filesystem
    (the reader already refused sizes beyond a blob's maximum)."""
    needed = sum(b.size for b in todo)
    try:
        free = shutil.disk_usage(root).free
    except OSError as error:
        raise StagingError(f"cannot read the free space of the staging cache {root}: {_describe(error)}") from error
    if needed > free:
        raise StagingError(
            f"the blobs to stage need {needed} bytes and the staging cache {root} has {free} free: "
            "free space, or stage a narrower prefix"
        )


def _prepare_directories(root: Path, todo: list[ListedBlob]) -> None:
    made: set[str] = set()
    for blob in todo:
        parent = blob.name.rpartition("/")[0]
        path = root / blob.name
        try:
            if parent and parent not in made:
                (root / parent).mkdir(parents=True, exist_ok=True)
                made.add(parent)
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, f"{path} is a directory in the cache")
        except OSError as error:
            raise StagingError(f"blob {blob.name!r} cannot be placed at {path}: {_describe(error)}") from error


def _download_all(run: _Run, todo: list[ListedBlob], workers: int, large_blob_concurrency: int) -> None:
    small = [b for b in todo if b.size < LARGE_BLOB_BYTES]
    large = [b for b in todo if b.size >= LARGE_BLOB_BYTES]
    futures: list[Future[None]] = []
    pools = [
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage"),
        ThreadPoolExecutor(max_workers=large_blob_concurrency, thread_name_prefix="stage-range"),
    ]
    downloads: list[_LargeDownload] = []
    try:
        futures += [pools[0].submit(run.small, b) for b in small]
        for blob in large:  # ranges queued blob after blob: the budget moves on as each one drains
            download = run.large(blob)
            downloads.append(download)
            futures += [pools[1].submit(download.fetch, i) for i in range(download.ranges)]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if run.first_failure is not None:
            raise run.first_failure
        failed = [f for f in futures if f in finished and f.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
    except BaseException:
        run.stop.set()  # pending downloads return at once; queued ones are cancelled below
        raise
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
        for download in downloads:
            download.discard()


def stage_blobs(
    container: ContainerClient,
    prefix: str,
    destination: Path,
    workers: int = 16,
    large_blob_concurrency: int = 8,
    *,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> StageResult:
    """Make `destination` hold every blob under `prefix` as it is in storage now."""
    for name, value in (("workers", workers), ("large_blob_concurrency", large_blob_concurrency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StagingError(f"{name} must be a whole number of at least 1, not {value!r}")
    try:
        reader = BlobReader.for_container(container, connections=workers + large_blob_concurrency)
    except UnsupportedCredential as error:
        raise StagingError(str(error)) from None
    try:
        destination.mkdir(parents=True, exist_ok=True)
        root = destination.resolve()  # once; every blob path below is checked on its name alone
        name_max = os.pathconf(root, "PC_NAME_MAX")
    except OSError as error:
        raise StagingError(f"cannot use {destination} as the staging cache: {_describe(error)}") from error

    with contextlib.closing(reader), _cache_lock(root, lock_timeout_s):
        _sweep_temporary(root / TEMPORARY)
        manifest = _Manifest(root)
        try:
            listed = [
                b
                for b in reader.list_blobs(prefix)
                if not (b.name.endswith("/") and b.size == 0)  # "folder" markers some tools create
            ]
        except BlobReadError as error:
            raise StagingError(f"cannot list {container.container_name}/{prefix}: {_describe(error)}") from error
        if not listed:
            raise StagingError(f"no blobs under {container.container_name}/{prefix}")
        listed.sort(key=lambda b: b.name)
        for blob in listed:
            _relative_path(blob.name, name_max)
        _check_file_directory_clashes(b.name for b in listed)

        pruned = _prune(manifest, root, prefix, {b.name for b in listed})
        # Plain strings: a Path per blob costs more than its stat (a warm run is only these).
        todo = [b for b in listed if not manifest.is_current(b, f"{root}/{b.name}")]
        _check_space(root, todo)
        _prepare_directories(root, todo)

        with _progress(sum(b.size for b in todo)) as bar:
            run = _Run(reader, root, manifest, bar)
            try:
                _download_all(run, todo, workers, large_blob_concurrency)
            finally:
                # Whatever completed stays cached, even when something failed: data first, then
                # the manifest that vouches for it.
                if run.renamed:
                    try:
                        _sync_filesystem(root)
                    except OSError as error:
                        raise StagingError(f"cannot sync the staging cache {root}: {_describe(error)}") from error
                manifest.save()

    reused = len(listed) - len(todo)
    log.info(
        "staged %d blobs: %d downloaded (%d bytes), %d reused, %d pruned",
        len(listed),
        len(todo),
        run.bytes,
        reused,
        pruned,
    )
    return StageResult(
        blobs=tuple(StagedBlob(b.name, root, b.etag, b.size, manifest.entries[b.name].get("sha256")) for b in listed),
        downloaded=len(todo),
        reused=reused,
        bytes_downloaded=run.bytes,
        pruned=pruned,
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
