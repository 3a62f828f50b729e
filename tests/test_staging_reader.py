"""Staging's blob reads (training/src/edge_train/reader.py) against Azurite and on the wire.

Azurite checks Shared Key signatures the way the service does, so a signature computed wrongly
for any name is a 403 here too; the recording proxy sees each request as the service would.
"""

from __future__ import annotations

import base64
import threading
from typing import Any
from xml.etree import ElementTree

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.harness import services
from tests.harness.arm_server import Reply, https_server
from tests.harness.http_proxy import Refusal
from training import emulator
from training.src.edge_train import reader, staging

AWKWARD_NAMES = [
    "data/with space.bin",
    "data/ünïcödé/名前.bin",
    "data/plus+sign.bin",
    "data/percent%41.bin",
    "data/hash#and?query&x=y.bin",
    "data/tilde~'quote.bin",
    "data/[brackets];(parens)!@$,.bin",
]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "BACKOFF_S", 0.001)


def test_shared_key_signatures_hold_for_awkward_names(tmp_path, container, wire) -> None:
    contents = {name: name.encode() * 50 for name in AWKWARD_NAMES}
    for name, data in contents.items():
        container.upload_blob(name, data)
    wire.clear()
    result = staging.stage_blobs(container, "data/", tmp_path / "cache", workers=4)
    assert result.downloaded == len(AWKWARD_NAMES)
    for name, data in contents.items():
        assert (tmp_path / "cache" / name).read_bytes() == data
    reads = [r for r in wire.proxy.recorded() if r.method == "GET" and "comp=list" not in r.path]
    assert len(reads) == len(AWKWARD_NAMES)
    assert all(r.headers["authorization"].startswith(f"SharedKey {emulator.ACCOUNT}:") for r in reads)
    assert all(r.headers["if-match"] and r.headers["x-ms-date"] for r in reads)


def test_a_blob_stored_gzip_encoded_is_staged_as_stored(tmp_path, container, wire) -> None:
    """Content-Encoding is a property of what is stored: the listing's size and Content-MD5 are the
    stored bytes', so those are what staging writes (a client that decoded would see a length
    mismatch, or stage other bytes than the fingerprint names)."""
    import gzip

    from azure.storage.blob import ContentSettings

    stored = gzip.compress(b"label,x\n" + b"1,2\n" * 2000)
    container.upload_blob("data/rows.csv.gz", stored, content_settings=ContentSettings(content_encoding="gzip"))
    result = staging.stage_blobs(container, "data/", tmp_path / "cache")
    assert (tmp_path / "cache" / "data/rows.csv.gz").read_bytes() == stored
    (read,) = [r for r in wire.proxy.recorded() if r.method == "GET" and "comp=list" not in r.path]
    assert "accept-encoding" not in read.headers  # nothing asked the service to encode on the way
    assert result.bytes_downloaded == len(stored)


def test_azurite_refuses_a_wrong_signature_so_the_test_above_means_something(container) -> None:
    container.upload_blob("data/a.bin", b"a")
    etag = container.get_blob_client("data/a.bin").get_blob_properties().etag
    wrong = reader.BlobReader(
        container.url,
        api_version="2019-07-07",
        account_name=emulator.ACCOUNT,
        account_key=base64.b64encode(b"not the account key").decode(),
    )
    with pytest.raises(reader.BlobReadError, match=r"HTTP 403 AuthorizationFailure|HTTP 403 AuthenticationFailed"):
        wrong.get("data/a.bin", etag)


def test_a_transient_refusal_is_retried(tmp_path, container, wire, quick_retries) -> None:
    container.upload_blob("data/a.bin", b"a" * 1000)
    refused: list[str] = []

    def busy_twice(method: str, path: str) -> Refusal | None:
        if method == "GET" and path.endswith("/data/a.bin") and len(refused) < 2:
            refused.append(path)
            return 503, "ServerBusy", "simulated: the server is busy"
        return None

    wire.on_request = busy_twice
    result = staging.stage_blobs(container, "data/", tmp_path / "cache")
    assert result.downloaded == 1 and (tmp_path / "cache/data/a.bin").read_bytes() == b"a" * 1000
    assert len(wire.gets) == 3


@pytest.mark.parametrize(
    ("refusal", "reads"),
    [((500, "InternalError", "simulated outage"), reader.ATTEMPTS), ((403, "AuthorizationFailure", "simulated"), 1)],
    ids=["a lasting server error: every attempt", "a refusal that cannot pass: one"],
)
def test_a_failure_is_retried_only_while_it_may_pass(tmp_path, container, wire, quick_retries, refusal, reads) -> None:
    container.upload_blob("data/a.bin", b"a")
    wire.on_request = lambda method, path: refusal if path.endswith("/data/a.bin") else None
    status, code, message = refusal
    with pytest.raises(staging.StagingError, match=rf"'data/a.bin': HTTP {status} {code}: {message}"):
        staging.stage_blobs(container, "data/", tmp_path / "cache")
    assert len(wire.gets) == reads


def test_a_stopped_run_abandons_the_retries(container, wire) -> None:
    container.upload_blob("data/a.bin", b"a")
    etag = container.get_blob_client("data/a.bin").get_blob_properties().etag
    wire.on_request = lambda method, path: (503, "ServerBusy", "simulated") if method == "GET" else None
    wire.clear()
    stop = threading.Event()
    stop.set()  # another download already failed
    blobs = reader.BlobReader.for_container(container, connections=1)
    with pytest.raises(reader.BlobReadError, match="ServerBusy"):
        blobs.get("data/a.bin", etag, stop=stop)
    assert len(wire.gets) == 1  # the default backoff would have waited; the stop ended it at once


@pytest.mark.parametrize(("header", "seconds"), [("2", 2.0), ("3600", reader.RETRY_AFTER_CAP_S), ("soon", None)])
def test_retry_after_is_honoured_up_to_a_cap(header, seconds) -> None:
    assert reader._retry_after(header) == seconds


class _TokenOnly:  # a credential Azure accepts and a Hub's storage does not
    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken("token", 2**31)


def test_a_client_with_another_credential_is_refused_before_anything(tmp_path, wire) -> None:
    # The SDK takes a token only over HTTPS; nothing is sent before the refusal, so no server is needed.
    service = BlobServiceClient(f"https://127.0.0.1:{wire.proxy.port}/{emulator.ACCOUNT}", credential=_TokenOnly())
    with pytest.raises(staging.StagingError, match=r"account key or a SAS token.*_TokenOnly"):
        staging.stage_blobs(service.get_container_client("c"), "data/", tmp_path / "cache")
    assert wire.proxy.recorded() == [] and not (tmp_path / "cache").exists()


def test_connections_are_kept_alive_in_a_pool_sized_to_the_workers(tmp_path, container, wire) -> None:
    for i in range(120):
        container.upload_blob(f"data/{i:03d}.bin", b"x" * 1024)
    connections_before = wire.proxy.connections
    staging.stage_blobs(container, "data/", tmp_path / "cache", workers=6, large_blob_concurrency=2)
    # 6 + 2 for the reads at most, and the listing's own; a pool smaller than the workers would
    # open and drop a connection for most of the 120 reads.
    assert wire.proxy.connections - connections_before <= 6 + 2 + 1


def test_tls_is_verified_against_the_configured_ca_bundle(tmp_path, monkeypatch, quick_retries) -> None:
    seen: list[dict[str, str]] = []

    def respond(method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        seen.append(headers)
        return Reply(200, "blob content", {"ETag": '"0x1"'})

    with https_server(tmp_path, respond, "blob-https") as (url, certificate):
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        untrusted = reader.BlobReader(
            f"{url}/acct/c", api_version="2019-07-07", account_name="acct", sas_token="sv=2019-07-07&sig=S"
        )
        with pytest.raises(reader.BlobReadError, match=r"SSL|certificate"):
            untrusted.get("a.bin", '"0x1"')
        assert seen == []  # no request went to a server that could not prove who it is

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
        trusted = reader.BlobReader(
            f"{url}/acct/c", api_version="2019-07-07", account_name="acct", sas_token="sv=2019-07-07&sig=S"
        )
        assert trusted.get("a.bin", '"0x1"') == b'"blob content"'
    assert seen[0]["if-match"] == '"0x1"' and seen[0]["x-ms-version"] == "2019-07-07"
    assert "authorization" not in seen[0]


@pytest.mark.parametrize("auth", ["shared key", "SAS"])
def test_the_listing_pages_through_markers_that_need_escaping(tmp_path, container, wire, monkeypatch, auth) -> None:
    """Two names a page: every marker after the first is an awkward name, signed (shared key) or
    carried beside the SAS in the query."""
    monkeypatch.setattr(reader, "PAGE_SIZE", 2)
    for name in AWKWARD_NAMES:
        container.upload_blob(name, name.encode())
    if auth == "SAS":
        token = services.read_list_sas(container.container_name)
        container = ContainerClient.from_container_url(f"{container.url}?{token}", api_version="2019-07-07")
    wire.clear()
    result = staging.stage_blobs(container, "data/", tmp_path / "cache")
    assert sorted(b.name for b in result.blobs) == sorted(AWKWARD_NAMES)
    listings = [r.path for r in wire.proxy.recorded() if "comp=list" in r.path]
    assert len(listings) == -(-len(AWKWARD_NAMES) // 2)
    assert sum("marker=" in path for path in listings) == len(listings) - 1


def test_a_listed_name_the_service_percent_encoded_is_decoded() -> None:
    """Newer API versions send names XML cannot carry as <Name Encoded="true">, percent-encoded
    (List Blobs, "Response body"); a newer Hub build may be told to use one (EDGE_BLOB_API_VERSION)."""
    element = ElementTree.fromstring(  # noqa: S314 (a literal)
        '<Blob><Name Encoded="true">data%2Fbell%07.bin</Name><Properties><Etag>0x1</Etag>'
        "<Content-Length>3</Content-Length></Properties></Blob>"
    )
    assert reader._listed(element) == reader.ListedBlob("data/bell\a.bin", "0x1", 3, None)


def test_an_account_key_that_is_not_base64_is_refused_by_name_not_echoed(tmp_path, wire) -> None:
    connection = emulator.connection_string(wire.proxy.port).replace(emulator.ACCOUNT_KEY, "not!base64-SECRETISH")
    service = BlobServiceClient.from_connection_string(connection)
    with pytest.raises(staging.StagingError, match=r"account key is not base64") as caught:
        staging.stage_blobs(service.get_container_client("c"), "data/", tmp_path / "cache")
    assert "SECRETISH" not in str(caught.value)
    assert wire.proxy.recorded() == [] and not (tmp_path / "cache").exists()


class _WaitRecorder(threading.Event):
    """The run's stop flag, recording how long a back-off would wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(timeout or 0.0)
        return False


def test_a_busy_services_retry_after_sets_the_back_off_up_to_its_cap() -> None:
    refusal = reader._refusal(
        503,
        "Server Busy",
        {"retry-after": "3600", "x-ms-error-code": "ServerBusy"},  # as the reader keeps them: lower-case
        b"<Error><Code>ServerBusy</Code><Message>slow down</Message></Error>",
    )
    assert (refusal.status, refusal.code, refusal.retry_after) == (503, "ServerBusy", reader.RETRY_AFTER_CAP_S)
    stop = _WaitRecorder()
    assert reader._back_off(stop, refusal, attempt=1) is False
    assert stop.waited == [reader.RETRY_AFTER_CAP_S]
