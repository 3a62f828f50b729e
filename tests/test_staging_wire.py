"""What staging sends, seen on the wire by a recording proxy in front of Azurite.

The clients are the ones the job builds (training/src/edge_train/credentials.py), from a
connection string or a SAS token; the proxy records each request after every SDK policy ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.harness import services
from tests.harness.http_proxy import HttpProxy
from training import emulator
from training.src.edge_train import credentials, staging


@pytest.fixture
def proxy(azurite: services.Azurite) -> Iterator[HttpProxy]:
    with HttpProxy(azurite.port) as running:
        yield running


@pytest.fixture
def container(azurite: services.Azurite) -> Iterator[ContainerClient]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string).create_container(
        f"t{uuid.uuid4().hex[:12]}"
    )
    yield client
    client.delete_container()


def via_proxy(proxy: HttpProxy) -> str:
    return emulator.connection_string(proxy.port)


def staging_requests(proxy: HttpProxy, container: ContainerClient) -> list[tuple[str, str]]:
    """(method, x-ms-version) of every request staging sent for this container."""
    return [
        (r.method, r.headers.get("x-ms-version", ""))
        for r in proxy.recorded()
        if r.path.split("?")[0].startswith(f"/{emulator.ACCOUNT}/{container.container_name}")
    ]


@pytest.mark.parametrize(
    ("environ", "version"),
    [({}, "2019-07-07"), ({"EDGE_BLOB_API_VERSION": "2021-08-06"}, "2021-08-06")],
    ids=["the Hub's version by default", "overridden for a newer Hub"],
)
def test_staging_speaks_the_hubs_blob_api_version(tmp_path, proxy, container, monkeypatch, environ, version) -> None:
    monkeypatch.setattr(staging, "LARGE_BLOB_BYTES", 64 * 1024)  # the ranged path too
    monkeypatch.setattr(staging, "RANGE_BYTES", 64 * 1024)
    container.upload_blob("data/small.bin", b"s" * 1000)
    container.upload_blob("data/large.bin", b"l" * 200_000)
    credential = credentials.resolve(None, {"AZURE_STORAGE_CONNECTION_STRING": via_proxy(proxy)})
    service = credential.service_client(None, environ=environ)
    staging.stage_blobs(service.get_container_client(container.container_name), "data/", tmp_path / "cache")

    sent = staging_requests(proxy, container)
    assert sorted({method for method, _ in sent}) == ["GET"]
    assert len(sent) == 1 + 1 + 4  # the listing, the small blob, four ranges of the large one
    assert {v for _, v in sent} == {version}
    assert credentials.HUB_BLOB_API_VERSION == "2019-07-07"


def test_a_sas_token_from_the_machine_stages_and_signs_every_request(tmp_path, proxy, container) -> None:
    container.upload_blob("data/a.bin", b"a" * 100)
    token = services.read_list_sas(container.container_name)
    credential = credentials.resolve(None, {"AZURE_STORAGE_SAS_TOKEN": f"?{token}"})
    service = credential.service_client(proxy.blob_endpoint(emulator.ACCOUNT))
    result = staging.stage_blobs(service.get_container_client(container.container_name), "data/", tmp_path / "c")
    assert (tmp_path / "c/data/a.bin").read_bytes() == b"a" * 100 and result.downloaded == 1

    sent = [r for r in proxy.recorded() if container.container_name in r.path]
    assert len(sent) == 2
    for request in sent:  # authorised by the SAS, not by a shared key
        assert "sig=" in request.path and "authorization" not in request.headers


@pytest.mark.parametrize("no_proxy", ["", "127.0.0.1"], ids=["through the proxy", "NO_PROXY honoured"])
def test_the_environments_proxy_is_obeyed_by_the_listing_and_the_reads(
    tmp_path, azurite, container, monkeypatch, no_proxy
):
    """The reader asks once, for the account's host, NO_PROXY included (not per request)."""
    container.upload_blob("data/a.bin", b"a")
    with HttpProxy(azurite.port) as forward_proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{forward_proxy.port}")
        monkeypatch.setenv("NO_PROXY", no_proxy)
        credential = credentials.resolve(None, {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
        service = credential.service_client(None)
        result = staging.stage_blobs(service.get_container_client(container.container_name), "data/", tmp_path / "c")
        proxied = [r.path for r in forward_proxy.recorded() if container.container_name in r.path]
    assert result.downloaded == 1 and (tmp_path / "c/data/a.bin").read_bytes() == b"a"
    if no_proxy:
        assert proxied == []
    else:  # in proxy form (absolute URLs): the listing, then the read
        assert len(proxied) == 2 and all(path.startswith(f"http://127.0.0.1:{azurite.port}/") for path in proxied)
        assert "comp=list" in proxied[0] and proxied[1].endswith("/data/a.bin")
