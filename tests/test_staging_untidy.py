"""Staging against a storage stand-in that answers untidily: bodies trickled or of the wrong length,
an ETag other than the one asked for, listings that are not XML, loop, never end or claim absurd
sizes. Every case is one StagingError (or BlobReadError from the reader) before anything wrong is
staged. The stand-in is a local HTTPS server (tests/harness/arm_server.py's) speaking List Blobs
and Get Blob the way the service does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.harness.arm_server import Reply, https_server
from tests.harness.raw_http import RawHttpServer, Request, response_head
from training.src.edge_train import reader, staging

SAS = "sv=2019-07-07&sr=c&sp=rl&sig=SECRETSIG"


def listing(*blobs: tuple[str, int, str], next_marker: str = "") -> bytes:
    entries = "".join(
        f"<Blob><Name>{name}</Name><Properties><Etag>{etag}</Etag><Content-Length>{size}</Content-Length>"
        "</Properties></Blob>"
        for name, size, etag in blobs
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c">'
        f"<Blobs>{entries}</Blobs><NextMarker>{next_marker}</NextMarker></EnumerationResults>"
    ).encode()


def xml(body: bytes) -> Reply:
    return Reply(200, raw=body, headers={"Content-Type": "application/xml"})


Storage = Callable[[str, str], Reply]


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Storage], ContainerClient]]:
    """`serve(respond)` starts the stand-in with `respond(method, path)` and gives the container client
    staging reads with (a SAS in the URL, the stand-in's CA trusted)."""
    started: list[object] = []

    def serve(respond: Storage) -> ContainerClient:
        context = https_server(tmp_path, lambda method, path, headers, raw: respond(method, path), "storage")
        url, certificate = context.__enter__()
        started.append(context)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
        return ContainerClient.from_container_url(f"{url}/acct/c?{SAS}", api_version="2019-07-07")

    yield serve
    for context in started:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]


def listed_then(blob_reply: Reply, blobs: tuple[tuple[str, int, str], ...] = (("a.bin", 3, "0x1"),)) -> Storage:
    def respond(method: str, path: str) -> Reply:
        return xml(listing(*blobs)) if "comp=list" in path else blob_reply

    return respond


@pytest.mark.parametrize(
    ("body", "said"), [(b"ab", "2 bytes where 3 were listed"), (b"abcde", "5 bytes where 3 were listed")]
)
def test_a_body_shorter_or_longer_than_listed_is_not_staged(tmp_path, storage, body, said) -> None:
    container = storage(listed_then(Reply(200, raw=body, headers={"ETag": '"0x1"'})))
    with pytest.raises(staging.StagingError, match=rf"blob 'a.bin': HTTP 200 LengthMismatch: {said}"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert not (tmp_path / "cache" / "a.bin").exists()


def test_an_answer_with_another_etag_than_asked_is_refused(tmp_path, storage) -> None:
    container = storage(listed_then(Reply(200, raw=b"abc", headers={"ETag": '"0x2"'})))
    with pytest.raises(staging.StagingError, match=r"blob 'a.bin' changed while it was being staged"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert not (tmp_path / "cache" / "a.bin").exists()


def test_a_matching_answer_is_staged(tmp_path, storage) -> None:
    """The stand-in's happy path, so the refusals above mean something."""
    container = storage(listed_then(Reply(200, raw=b"abc", headers={"ETag": '"0x1"'})))
    assert staging.stage_blobs(container, "", tmp_path / "cache").downloaded == 1
    assert (tmp_path / "cache" / "a.bin").read_bytes() == b"abc"


@pytest.mark.parametrize("stall_at", [None, 12], ids=["trickled", "trickled then stalled"])
def test_a_trickled_body_fails_at_the_request_deadline(tmp_path, storage, monkeypatch, stall_at) -> None:
    """One byte every 0.1 s never trips the 60 s read timeout; the request's deadline does. A stall
    after 1.2 s ends at the 1.5 s deadline, not at a read timeout set when the request began."""
    monkeypatch.setattr(reader, "REQUEST_DEADLINE_S", 1.5)
    body = b"x" * 100
    reply = Reply(200, raw=body, headers={"ETag": '"0x1"'}, trickle_s=0.1, stall_at=stall_at)
    container = storage(listed_then(reply, (("a.bin", len(body), "0x1"),)))
    started = time.monotonic()
    with pytest.raises(staging.StagingError, match=r"blob 'a.bin': .*still arriving at the 1.5s deadline"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert time.monotonic() - started < 2.3


@pytest.mark.parametrize(
    ("page", "said"),
    [
        (Reply(200, raw=b"<html>proxy login</htm", headers={"Content-Type": "text/html"}), "the listing is not XML"),
        (xml(b"<Error><Code>X</Code></Error>"), "root is <Error>, not <EnumerationResults>"),
        (xml(listing(("a.bin", -1, "0x1"))), "listed at -1 bytes"),
        (xml(listing(("a.bin", reader.MAX_BLOB_BYTES + 1, "0x1"))), f"listed at {reader.MAX_BLOB_BYTES + 1} bytes"),
        (xml(listing(("a.bin", 3, ""))), "listed without an ETag"),
    ],
    ids=["html", "an error document", "negative size", "beyond a blob's maximum", "no etag"],
)
def test_a_listing_that_cannot_be_believed_is_one_staging_error(tmp_path, storage, page, said) -> None:
    gets: list[str] = []

    def respond(method: str, path: str) -> Reply:
        gets.append(path)
        return page

    container = storage(respond)
    with pytest.raises(staging.StagingError, match=rf"cannot list c/: .*{said}") as caught:
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert "SECRETSIG" not in str(caught.value)
    assert all("comp=list" in path for path in gets)  # nothing was read


def test_a_repeating_next_marker_is_a_loop_not_followed_forever(tmp_path, storage) -> None:
    pages: list[str] = []

    def respond(method: str, path: str) -> Reply:
        pages.append(path)
        return xml(listing((f"b{len(pages)}.bin", 1, "0x1"), next_marker="m1"))

    container = storage(respond)
    with pytest.raises(staging.StagingError, match=r"repeats its NextMarker 'm1': a loop"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert len(pages) == 2


def test_a_listing_that_never_ends_stops_at_the_page_limit(tmp_path, storage, monkeypatch) -> None:
    monkeypatch.setattr(reader, "MAX_PAGES", 5)
    pages: list[str] = []

    def respond(method: str, path: str) -> Reply:
        pages.append(path)
        return xml(listing((f"b{len(pages)}.bin", 1, "0x1"), next_marker=f"m{len(pages)}"))

    container = storage(respond)
    with pytest.raises(staging.StagingError, match=r"goes on past 5 pages"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert len(pages) == 5


def test_blobs_that_cannot_fit_the_cache_are_refused_before_any_range_is_planned(tmp_path, storage) -> None:
    gets: list[str] = []

    def respond(method: str, path: str) -> Reply:
        gets.append(path)
        return xml(listing(("huge.bin", 2**47, "0x1"))) if "comp=list" in path else Reply(500)

    container = storage(respond)
    with pytest.raises(staging.StagingError, match=r"need 140737488355328 bytes and the staging cache .* free"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert len(gets) == 1


def test_a_retry_after_beyond_the_deadline_is_not_waited_for(tmp_path, storage, monkeypatch) -> None:
    monkeypatch.setattr(reader, "REQUEST_DEADLINE_S", 5.0)
    busy = Reply(503, raw=b"<Error><Message>busy</Message></Error>", headers={"Retry-After": "20"})
    container = storage(listed_then(busy))
    started = time.monotonic()
    with pytest.raises(staging.StagingError, match=r"blob 'a.bin': HTTP 503"):
        staging.stage_blobs(container, "", tmp_path / "cache")
    assert time.monotonic() - started < 3


def test_a_body_without_a_content_length_is_still_held_to_the_listed_size() -> None:
    """A chunked answer declares no length: the count of bytes received is what is checked, and a
    complete answer of the wrong length is the blob's, not a transfer to try again."""

    def chunked(request: Request) -> bool:
        body = request.target.split("?")[0].rsplit("/", 1)[1].encode()  # the blob's name is its body
        head = response_head(200, {"ETag": '"0x1"', "Transfer-Encoding": "chunked"})
        request.connection.sendall(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        return True

    with RawHttpServer(chunked) as server:
        blobs = reader.BlobReader(
            f"{server.url}/acct/c", api_version="2019-07-07", account_name="acct", sas_token="sig=S"
        )
        for body, said in ((b"ab", "2 bytes where 3"), (b"abcd", "more than the 3 bytes")):
            with pytest.raises(reader.BlobLengthMismatch, match=rf"HTTP 200 LengthMismatch: {said}"):
                blobs.get_whole(reader.ListedBlob(body.decode(), "0x1", 3, None))
        assert blobs.get_whole(reader.ListedBlob("abc", "0x1", 3, None)) == b"abc"
        blobs.close()
    assert len(server.requests) == 3  # none of them tried again
