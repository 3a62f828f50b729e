"""Staging under bad names, broken caches and changing storage, against Azurite.

Every case ends in one StagingError naming the blob or cache file it concerns, or in a cache
that is true to storage; none leaves a file that looks complete and is not.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from tests.harness.http_proxy import Refusal
from training.src.edge_train import staging

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs from 64 KiB on take the ranged path, in 64 KiB ranges."""
    monkeypatch.setattr(staging, "LARGE_BLOB_BYTES", 64 * 1024)
    monkeypatch.setattr(staging, "RANGE_BYTES", 64 * 1024)


def manifest(cache: Path) -> dict[str, Any]:
    return json.loads((cache / staging.MANIFEST).read_text())


def partials(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and p.name.endswith(".partial")]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the cache is keyed by ETag, and holds exactly the listed version ------------------------------


def test_a_rewrite_of_the_same_size_is_staged_again(tmp_path, container) -> None:
    container.upload_blob("data/a.bin", b"A" * 1000)
    cache = tmp_path / "cache"
    staging.stage_blobs(container, "data/", cache)
    container.upload_blob("data/a.bin", b"B" * 1000, overwrite=True)
    again = staging.stage_blobs(container, "data/", cache)
    assert again.downloaded == 1
    assert (cache / "data/a.bin").read_bytes() == b"B" * 1000
    assert manifest(cache)["data/a.bin"]["sha256"] == sha256(b"B" * 1000) == again.blobs[0].sha256


@pytest.mark.parametrize("path", ["small", "ranged"])
def test_a_blob_rewritten_during_its_download_is_refused_not_mixed(
    tmp_path, container, wire, azurite, request, path
) -> None:
    if path == "ranged":
        request.getfixturevalue("large")
    old, new = b"1" * 200_000, b"2" * 200_000
    container.upload_blob("data/a.bin", old)
    writer = BlobServiceClient.from_connection_string(azurite.connection_string)
    rewrites: list[str] = []

    def rewrite_once(method: str, path_: str) -> None:
        if method == "GET" and path_.endswith("/data/a.bin") and not rewrites:
            rewrites.append(path_)
            writer.get_blob_client(container.container_name, "data/a.bin").upload_blob(new, overwrite=True)

    wire.on_request = rewrite_once
    cache = tmp_path / "cache"
    with pytest.raises(staging.StagingError, match=r"'data/a.bin' changed while it was being staged"):
        staging.stage_blobs(container, "data/", cache)
    assert rewrites, "the rewrite never happened: the test proved nothing"
    assert not (cache / "data/a.bin").exists()
    assert "data/a.bin" not in (manifest(cache) if (cache / staging.MANIFEST).exists() else {})
    assert partials(cache) == []

    wire.on_request = None
    again = staging.stage_blobs(container, "data/", cache)
    assert (cache / "data/a.bin").read_bytes() == new and again.blobs[0].sha256 == sha256(new)


@pytest.mark.parametrize("path", ["small", "ranged"])
def test_content_that_does_not_match_its_content_md5_is_refused(tmp_path, container, request, path) -> None:
    if path == "ranged":
        request.getfixturevalue("large")
    container.upload_blob("data/a-good.bin", b"g" * 200_000)
    bad = container.upload_blob("data/bad.bin", b"b" * 200_000)
    bad.set_http_headers(ContentSettings(content_md5=bytearray(hashlib.md5(b"other").digest())))  # noqa: S324
    cache = tmp_path / "cache"
    with pytest.raises(staging.StagingError, match=r"'data/bad.bin'.*Content-MD5"):
        staging.stage_blobs(container, "data/", cache, workers=1, large_blob_concurrency=1)
    assert not (cache / "data/bad.bin").exists()
    assert "data/bad.bin" not in manifest(cache)
    assert partials(cache) == []


def test_a_large_blob_is_written_aside_and_renamed_into_place(tmp_path, container, wire, large) -> None:
    data = os.urandom(300_000)  # five 64 KiB ranges
    container.upload_blob("data/big.bin", data)
    cache = tmp_path / "cache"
    seen: list[tuple[bool, int]] = []

    def observe(method: str, path: str) -> None:
        if method == "GET" and path.endswith("/data/big.bin"):
            seen.append(((cache / "data/big.bin").exists(), len(partials(cache))))

    wire.on_request = observe
    result = staging.stage_blobs(container, "data/", cache, large_blob_concurrency=1)
    assert len(seen) == 5 and {s for s in seen[1:]} == {(False, 1)}  # mid-download: only a .partial
    assert (cache / "data/big.bin").read_bytes() == data
    assert result.blobs[0].sha256 == sha256(data) == manifest(cache)["data/big.bin"]["sha256"]


# --- filesystem faults: one StagingError naming the blob, nothing that looks complete -----------------


FILE_SIZE_LIMIT_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from azure.storage.blob import BlobServiceClient
from training.src.edge_train import staging

# Python ignores SIGXFSZ (the write then fails with EFBIG); by default the signal kills mid-write.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[4] == "refused" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
container = BlobServiceClient.from_connection_string(sys.argv[1]).get_container_client(sys.argv[2])
try:
    staging.stage_blobs(container, "data/", Path(sys.argv[3]), workers=1)
except staging.StagingError as error:
    print(error)
    sys.exit(3)
"""


@pytest.mark.parametrize("ending", ["refused", "killed"])
def test_a_write_that_fails_midway_leaves_no_file_that_looks_complete(tmp_path, container, azurite, ending) -> None:
    container.upload_blob("data/a-small.bin", b"s" * 50_000)
    container.upload_blob("data/b-too-big.bin", b"t" * 200_000)  # over the file-size limit
    cache = tmp_path / "cache"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            FILE_SIZE_LIMIT_SCRIPT,
            azurite.connection_string,
            container.container_name,
            cache,
            ending,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not (cache / "data/b-too-big.bin").exists()  # never at its final path half-written
    if ending == "refused":  # one error naming the blob, nothing left behind
        assert out.returncode == 3, out.stderr
        assert "'data/b-too-big.bin'" in out.stdout and "File too large" in out.stdout
        assert partials(cache) == []
        assert list(manifest(cache)) == ["data/a-small.bin"]
    else:  # killed before the manifest was written: it vouches for nothing; the next run recovers
        assert out.returncode == -signal.SIGXFSZ, out.stderr
        assert not (cache / staging.MANIFEST).exists()
        again = staging.stage_blobs(container, "data/", cache)
        assert again.downloaded == 2 and partials(cache) == []
        assert (cache / "data/b-too-big.bin").read_bytes() == b"t" * 200_000


BAD_LISTINGS: list[tuple[str, list[str], str]] = [
    ("a blob and a folder of the same name", ["data/x", "data/x/y"], r"'data/x/y' needs 'data/x' to be a directory"),
    ("a path segment over the file-name limit", ["data/" + "n" * 300], r"'data/n{300}' has a path segment longer"),
    ("a name with an empty segment", ["data//x"], r"'data//x' would land outside"),
    ("the cache's own manifest", [staging.MANIFEST], r"collides with the staging cache's own"),
    ("the cache's own temporary folder", [f"{staging.TEMPORARY}/x"], r"collides with the staging cache's own"),
]


@pytest.mark.parametrize(("names", "error"), [row[1:] for row in BAD_LISTINGS], ids=[row[0] for row in BAD_LISTINGS])
def test_a_listing_the_filesystem_cannot_hold_is_refused_before_any_download(
    tmp_path, container, wire, names, error
) -> None:
    for name in names:
        container.upload_blob(name, b"x")
    cache = tmp_path / "cache"
    with pytest.raises(staging.StagingError, match=error):
        staging.stage_blobs(container, "", cache)
    assert wire.gets == []  # refused from the listing alone
    assert not (cache / staging.MANIFEST).exists()


@pytest.mark.parametrize(
    ("option", "value"), [("workers", 0), ("workers", -1), ("large_blob_concurrency", 0), ("workers", True)]
)
def test_a_pool_size_below_one_is_refused_naming_the_option(tmp_path, container, wire, option, value) -> None:
    container.upload_blob("data/a", b"a")
    with pytest.raises(staging.StagingError, match=rf"{option} must be a whole number of at least 1, not {value}"):
        staging.stage_blobs(container, "data/", tmp_path / "cache", **{option: value})
    assert wire.gets == [] and not (tmp_path / "cache").exists()


def test_a_name_of_250_characters_is_staged(tmp_path, container) -> None:
    name = "data/" + "n" * 250  # the old temporary name (".<name>.<random>.partial") exceeded 255
    container.upload_blob(name, b"long")
    staging.stage_blobs(container, "data/", tmp_path / "cache")
    assert (tmp_path / "cache" / name).read_bytes() == b"long"


def test_a_directory_where_a_blob_lands_is_a_clear_error(tmp_path, container) -> None:
    container.upload_blob("data/x", b"x")
    (tmp_path / "cache/data/x").mkdir(parents=True)
    with pytest.raises(staging.StagingError, match=r"'data/x' cannot be placed at .*data/x.*directory"):
        staging.stage_blobs(container, "data/", tmp_path / "cache")


def test_a_cache_path_that_is_a_file_is_a_clear_error(tmp_path, container) -> None:
    container.upload_blob("data/x", b"x")
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(staging.StagingError, match=r"cannot use .*cache as the staging cache"):
        staging.stage_blobs(container, "data/", tmp_path / "cache")


@pytest.mark.parametrize(
    "content", [b"[]", b"null", b"\xff\xfe\x00", b"{", b'{"data/a.bin": "x"}', b'{"data/a.bin": {"etag": 1}}']
)
def test_a_corrupt_manifest_is_discarded_and_the_cache_restaged(tmp_path, container, caplog, content) -> None:
    container.upload_blob("data/a.bin", b"a" * 100)
    cache = tmp_path / "cache"
    staging.stage_blobs(container, "data/", cache)
    (cache / "data/a.bin").write_bytes(b"z" * 100)  # same size, wrong content: only the manifest knew
    (cache / staging.MANIFEST).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger=staging.__name__):
        again = staging.stage_blobs(container, "data/", cache)
    assert again.downloaded == 1
    assert (cache / "data/a.bin").read_bytes() == b"a" * 100
    assert manifest(cache)["data/a.bin"]["sha256"] == sha256(b"a" * 100)
    if content in (b"[]", b"null", b"\xff\xfe\x00", b"{"):
        assert str(cache / staging.MANIFEST) in caplog.text


# --- housekeeping: partial files swept, deleted blobs pruned ----------------------------------------


def test_partial_files_of_a_killed_run_are_swept(tmp_path, container) -> None:
    container.upload_blob("data/a.bin", b"a")
    cache = tmp_path / "cache"
    (cache / staging.TEMPORARY).mkdir(parents=True)
    (cache / staging.TEMPORARY / "tmpk1ll3d.partial").write_bytes(b"half")
    staging.stage_blobs(container, "data/", cache)
    assert partials(cache) == []


def test_blobs_no_longer_listed_are_pruned_and_other_prefixes_kept(tmp_path, container) -> None:
    for name in ("data/keep.bin", "data/gone/deep.bin", "data/x", "other/stay.bin"):
        container.upload_blob(name, b"1")
    cache = tmp_path / "cache"
    staging.stage_blobs(container, "data/", cache)
    staging.stage_blobs(container, "other/", cache)
    container.delete_blob("data/gone/deep.bin")
    container.delete_blob("data/x")
    container.upload_blob("data/x/now-a-folder.bin", b"2")  # needs the pruned file's name as a folder
    result = staging.stage_blobs(container, "data/", cache)
    assert result.pruned == 2
    assert not (cache / "data/gone").exists()  # the file and the folder it left empty
    assert (cache / "data/x/now-a-folder.bin").read_bytes() == b"2"
    assert sorted(manifest(cache)) == ["data/keep.bin", "data/x/now-a-folder.bin", "other/stay.bin"]
    assert (cache / "other/stay.bin").exists()


# --- failures stop the run; waits have deadlines; errors hold no secret ------------------------------


def test_the_first_failure_cancels_the_pending_downloads(tmp_path, container, wire) -> None:
    for i in range(20):
        container.upload_blob(f"data/{i:02d}.bin", b"x")

    def refuse(method: str, path: str) -> Refusal | None:
        if method == "GET" and "/data/" in path:
            return 403, "AuthorizationFailure", "simulated refusal"
        return None

    wire.on_request = refuse
    with pytest.raises(staging.StagingError, match=r"'data/00.bin': HTTP 403 AuthorizationFailure: simulated refusal"):
        staging.stage_blobs(container, "data/", tmp_path / "cache", workers=1)
    assert len(wire.gets) == 1  # queued downloads cancelled, and started ones see the stop flag


def test_a_held_cache_lock_is_waited_for_until_a_deadline(tmp_path, container) -> None:
    container.upload_blob("data/a.bin", b"a")
    cache = tmp_path / "cache"
    cache.mkdir()
    with (cache / staging.LOCK).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(staging.StagingError, match=r"another stager held .*\.edge-staging\.lock for more than"):
            staging.stage_blobs(container, "data/", cache, lock_timeout_s=0.2)
    assert staging.stage_blobs(container, "data/", cache).downloaded == 1  # free again


def test_a_listing_error_is_a_staging_error_without_the_sas_signature(tmp_path) -> None:
    from training.src.edge_train import credentials

    with socket_closed_port() as port:
        credential = credentials.resolve(None, {"AZURE_STORAGE_SAS_TOKEN": "sv=2019-07-07&sig=SECRETSIG"})
        service = credential.service_client(f"http://127.0.0.1:{port}/acct", retry_total=0)
        with pytest.raises(staging.StagingError, match=r"cannot list c/data/") as caught:
            staging.stage_blobs(service.get_container_client("c"), "data/", tmp_path / "cache")
    assert "SECRETSIG" not in str(caught.value)


class socket_closed_port:
    """A port nothing listens on: bound, then closed."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *_: object) -> None:
        pass


def test_large_blobs_in_parallel_ranges_are_hashed_in_order(tmp_path, container, large) -> None:
    """Ranges finish out of order across 4 threads and two blobs; the recorded SHA-256 is still
    the content's, so the fingerprint of a large blob needs no second read."""
    blobs = {f"data/big-{i}.bin": os.urandom(40 * 64 * 1024 + 123) for i in range(2)}
    for name, data in blobs.items():
        container.upload_blob(name, data)
    result = staging.stage_blobs(container, "data/", tmp_path / "cache", large_blob_concurrency=4)
    assert {b.name: b.sha256 for b in result.blobs} == {name: sha256(data) for name, data in blobs.items()}
    for name, data in blobs.items():
        assert (tmp_path / "cache" / name).read_bytes() == data
