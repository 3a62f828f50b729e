"""The reader's transport over libcurl (training/src/edge_train/transport.py, reader.py's `_Answer`):
what libcurl would otherwise decide for itself. Each attempt ends by the request's deadline, a
transfer that stalls fails and is retried, a body's length is held to the listed one while it
arrives, only the reader's proxy decision counts (libcurl's own reading of the environment is
off), TLS trusts the configured bundle only, and kept-alive connections are capped at the pool's
size.

The servers are tests/harness/raw_http.py's, on 127.0.0.1, stopped by each test. libcurl blocks
in C, where pytest-timeout's signal cannot interrupt it: every call that could hang runs in a
thread with a join timeout (`within`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import certifi
import pytest

from tests.harness.http_proxy import HttpProxy
from tests.harness.private_ca import make_private_ca
from tests.harness.raw_http import ConnectProxy, RawHttpServer, Request, response_head
from training.src.edge_train import reader

T = TypeVar("T")
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "EDGE_HUB_CA_FILE")


def unset(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Unset for the test, and unset again after it even if the code under test set them."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA setting of the machine's leaks into these tests; quick retries."""
    unset(monkeypatch, *PROXY_VARIABLES, *NO_PROXY_VARIABLES, *TLS_VARIABLES)
    monkeypatch.setattr(reader, "BACKOFF_S", 0.001)


def within(seconds: float, call: Callable[[], T]) -> T:
    """`call()` on a thread of its own: its result, or its exception re-raised; a test failure if
    it is still running after `seconds`."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def reader_for(url: str, connections: int = 4) -> reader.BlobReader:
    return reader.BlobReader(
        f"{url}/acct/c", api_version="2019-07-07", account_name="acct", sas_token="sv=2019-07-07&sig=S",
        connections=connections,
    )  # fmt: skip


def listed(size: int, name: str = "a.bin") -> reader.ListedBlob:
    return reader.ListedBlob(name, "0x1", size, None)


def answering(body: bytes, keep_alive: bool = True) -> Callable[[Request], bool]:
    def answer(request: Request) -> bool:
        head = response_head(200, {"ETag": '"0x1"', "Content-Length": str(len(body))})
        request.connection.sendall(head + body)
        return keep_alive

    return answer


# --- time --------------------------------------------------------------------------------------------


def test_a_trickled_body_ends_at_the_requests_deadline(monkeypatch) -> None:
    """A byte every 50 ms never stalls; the deadline (1 s here) ends the transfer, not the body's
    end at 5 s."""
    monkeypatch.setattr(reader, "REQUEST_DEADLINE_S", 1.0)

    def trickle(request: Request) -> bool:
        request.connection.sendall(response_head(200, {"ETag": '"0x1"', "Content-Length": "100"}))
        for _ in range(100):
            if request.stop.wait(0.05):  # the trickle's pace; ends early when the server closes
                break
            request.connection.sendall(b"x")
        return False

    with RawHttpServer(trickle) as server:
        blobs = reader_for(server.url)
        started = time.monotonic()
        with pytest.raises(reader.BlobReadError) as caught:
            within(4, lambda: blobs.get_whole(listed(100)))
        took = time.monotonic() - started
    found = re.fullmatch(r"the body was still arriving at the 1s deadline \((\d+) bytes\)", str(caught.value))
    assert found, str(caught.value)
    assert (caught.value.status, caught.value.code) == (0, "Timeout")
    assert 5 <= int(found.group(1)) < 100
    assert 0.9 <= took < 1.7
    assert len(server.requests) == 1  # no attempt after the deadline


def test_a_transfer_that_stalls_fails_after_the_read_timeout_and_is_retried(monkeypatch) -> None:
    """The head, then not a byte of the body. (libcurl measures speed over its last few seconds,
    so a stall right after body bytes is noticed up to about 4 s later than this.)"""
    monkeypatch.setattr(reader, "READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr(reader, "ATTEMPTS", 2)

    def stall(request: Request) -> bool:
        request.connection.sendall(response_head(200, {"ETag": '"0x1"', "Content-Length": "10"}))
        request.stop.wait()  # not another byte until the server closes
        return False

    with RawHttpServer(stall) as server:
        blobs = reader_for(server.url)
        started = time.monotonic()
        with pytest.raises(reader.BlobReadError, match=r"too slow") as caught:
            within(8, lambda: blobs.get_whole(listed(10)))
        took = time.monotonic() - started
        blobs.close()
    assert caught.value.code == "Timeout"
    assert 2 <= took < 5  # two attempts of about a second each, not the default minute
    assert len(server.requests) == 2  # a stall may pass: it was tried again


# --- length ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["until close", "chunked"])
def test_a_body_longer_than_listed_is_cut_off_as_it_arrives(framing) -> None:
    """An endless body (256 MiB at most) for a 10-byte blob: the transfer stops once it runs past
    10 bytes, long before the server could send it all, and nothing of it is kept."""
    sent: list[int] = []
    done = threading.Event()
    chunked = framing == "chunked"

    def endless(request: Request) -> bool:
        headers = {"ETag": '"0x1"'} | ({"Transfer-Encoding": "chunked"} if chunked else {"Connection": "close"})
        piece, total = b"x" * (1 << 20), 0
        try:
            request.connection.sendall(response_head(200, headers))
            while total < 256 << 20 and not request.stop.is_set():
                request.connection.sendall(b"100000\r\n" + piece + b"\r\n" if chunked else piece)
                total += len(piece)
        finally:
            sent.append(total)
            done.set()
        return False

    with RawHttpServer(endless) as server:
        blobs = reader_for(server.url)
        with pytest.raises(reader.BlobLengthMismatch, match=r"^HTTP 200 LengthMismatch: more than the 10 bytes"):
            within(10, lambda: blobs.get_whole(listed(10)))
        assert done.wait(10)
    assert sent[0] < 32 << 20  # what the socket buffers took before the client hung up
    assert len(server.requests) == 1


def test_a_content_length_other_than_listed_is_refused_before_the_body() -> None:
    """The head says 1,000,000 bytes for a 10-byte blob and the server sends no body until the
    client hangs up: a client that waited for the body would wait for the read timeout."""
    hung_up = threading.Event()

    def lying_head(request: Request) -> bool:
        request.connection.sendall(response_head(200, {"ETag": '"0x1"', "Content-Length": "1000000"}))
        request.connection.settimeout(10)
        if request.connection.recv(1) == b"":
            hung_up.set()
        return False

    with RawHttpServer(lying_head) as server:
        blobs = reader_for(server.url)
        with pytest.raises(reader.BlobLengthMismatch, match=r"^HTTP 200 LengthMismatch: 1000000 bytes where 10 were"):
            within(4, lambda: blobs.get_whole(listed(10)))
        assert hung_up.wait(5)
    assert len(server.requests) == 1  # not retried: the blob is not what was listed


def test_a_body_short_of_its_own_content_length_is_a_transport_failure_and_retried() -> None:
    bodies = iter([b"abcd", b"abcdefghij"])

    def cut_short_once(request: Request) -> bool:
        head = response_head(200, {"ETag": '"0x1"', "Content-Length": "10"})
        request.connection.sendall(head + next(bodies))
        return False  # the first answer's connection closes 6 bytes early

    with RawHttpServer(cut_short_once) as server:
        blobs = reader_for(server.url)
        assert within(4, lambda: blobs.get_whole(listed(10))) == b"abcdefghij"
    assert len(server.requests) == 2


# --- proxy -------------------------------------------------------------------------------------------


def test_the_environments_proxy_is_not_used_when_the_reader_chose_none(monkeypatch) -> None:
    """libcurl reads http_proxy and ALL_PROXY by itself; the reader decided (requests' rules) that
    this host goes direct, and that decision is the only one."""
    with RawHttpServer(answering(b"abc")) as server, RawHttpServer(answering(b"via the decoy")) as decoy:
        for name in ("http_proxy", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, decoy.url)
        monkeypatch.setattr(reader, "_proxy_for", lambda url: None)
        blobs = reader_for(server.url)
        assert within(4, lambda: blobs.get_whole(listed(3))) == b"abc"
    assert decoy.requests == [] and len(server.requests) == 1


def test_http_goes_through_the_chosen_proxy_as_an_absolute_uri(monkeypatch) -> None:
    with RawHttpServer(answering(b"abc")) as server, HttpProxy(server.port) as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        blobs = reader_for(server.url)
        assert within(4, lambda: blobs.get_whole(listed(3))) == b"abc"
        (seen,) = proxy.recorded()
    assert seen.path.startswith(f"{server.url}/acct/c/a.bin?")
    assert seen.headers["if-match"] == "0x1"


def test_the_chosen_proxy_is_used_where_libcurl_would_read_no_proxy_otherwise(monkeypatch) -> None:
    """NO_PROXY is requests' rule to apply, once, in the reader: libcurl does not apply it again."""
    with RawHttpServer(answering(b"abc")) as server, HttpProxy(server.port) as proxy:
        for name in NO_PROXY_VARIABLES:
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        monkeypatch.setattr(reader, "_proxy_for", lambda url: f"http://127.0.0.1:{proxy.port}")
        blobs = reader_for(server.url)
        assert within(4, lambda: blobs.get_whole(listed(3))) == b"abc"
        assert len(proxy.recorded()) == 1


def test_https_goes_through_the_proxy_in_a_connect_tunnel(tmp_path, monkeypatch) -> None:
    """The proxy's own answer to CONNECT is not taken for the response's head (its 200 carries no
    ETag), the origin's certificate is checked through the tunnel, and the tunnel is kept."""
    pki = make_private_ca(tmp_path / "pki")
    with RawHttpServer(answering(b"abc"), tls=(pki.server_cert, pki.server_key)) as server, ConnectProxy() as proxy:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
        monkeypatch.setenv("https_proxy", proxy.url)
        blobs = reader_for(server.url)
        for name in ("a.bin", "b.bin"):
            assert within(4, lambda name=name: blobs.get_whole(listed(3, name))) == b"abc"
        blobs.close()
    assert proxy.tunnels == [f"127.0.0.1:{server.port}"]
    assert [target.split("?")[0] for target in server.requests] == ["/acct/c/a.bin", "/acct/c/b.bin"]


# --- TLS ---------------------------------------------------------------------------------------------


def test_tls_trusts_the_configured_bundle_only_and_checks_the_host_name(tmp_path, monkeypatch) -> None:
    pki = make_private_ca(tmp_path / "pki")
    with RawHttpServer(answering(b"abc"), tls=(pki.server_cert, pki.server_key)) as server:
        # Named elsewhere, but not in the configured bundle (certifi's): not trusted.
        monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
        monkeypatch.setenv("SSL_CERT_DIR", str(pki.ca_file.parent))
        with pytest.raises(reader.BlobReadError, match=r"CERTIFICATE_VERIFY_FAILED: SSL certificate") as refused:
            within(4, lambda: reader_for(server.url).get_whole(listed(3)))
        assert certifi.where() in str(refused.value)  # names the bundle it trusted
        assert server.connections == 1  # not retried: the certificate will not change

        # The Hub's CA, next to certifi's (trust.py): trusted, for the name in the certificate only.
        unset(monkeypatch, "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
        monkeypatch.setenv("EDGE_HUB_CA_FILE", str(pki.ca_file))
        assert within(4, lambda: reader_for(server.url).get_whole(listed(3))) == b"abc"
        elsewhere = f"https://localhost:{server.port}"  # the certificate names 127.0.0.1 only
        with pytest.raises(reader.BlobReadError, match=r"CERTIFICATE_VERIFY_FAILED.*localhost"):
            within(4, lambda: reader_for(elsewhere).get_whole(listed(3)))
        assert server.connections == 3  # the refused one, the trusted one, the wrong name once
    assert len(server.requests) == 1  # only to the server that proved who it is


# --- connections -------------------------------------------------------------------------------------


def test_idle_connections_are_kept_up_to_the_pools_size() -> None:
    """Four GETs at once on a pool of two: four connections, of which two are kept and reused by
    the next four; one at a time, one kept connection serves them all."""
    together = threading.Barrier(4, timeout=5)

    def answer(request: Request) -> bool:
        if "/together-" in request.target:
            together.wait()  # all four are in flight at once, each on a connection of its own
        return answering(b"abc")(request)

    with RawHttpServer(answer) as server:
        blobs = reader_for(server.url, connections=2)

        def four_at_once() -> list[bytes | bytearray]:
            with ThreadPoolExecutor(4) as pool:
                return list(pool.map(lambda i: blobs.get_whole(listed(3, f"together-{i}")), range(4)))

        assert within(8, four_at_once) == [b"abc"] * 4
        assert server.connections == 4
        assert within(8, four_at_once) == [b"abc"] * 4
        assert server.connections == 6  # two kept from the first four, two new
        for i in range(3):
            assert within(4, lambda i=i: blobs.get_whole(listed(3, f"alone-{i}"))) == b"abc"
        assert server.connections == 6
        blobs.close()
