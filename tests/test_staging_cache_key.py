"""The default staging cache is one per storage account AND container (edge_train.hub.default_cache):
two Hub accounts with a container of the same name never share, reuse or prune each other's files."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from tests.harness.http_proxy import Wire
from training import emulator
from training.src.edge_train import hub


class _RenamedAccount:
    """The same Azurite account under another name: what a second Hub account with a container of
    the same name looks like to the cache (everything else is the real client's)."""

    def __init__(self, service: BlobServiceClient, name: str) -> None:
        self._service, self.account_name = service, name

    def get_container_client(self, container: str) -> Any:
        return self._service.get_container_client(container)


def test_two_accounts_with_one_container_name_get_two_caches(tmp_path, wire: Wire, monkeypatch) -> None:
    monkeypatch.setenv(hub.CACHE_VARIABLE, str(tmp_path / "caches"))
    service = BlobServiceClient.from_connection_string(emulator.connection_string(wire.proxy.port))
    container = service.create_container(f"t{uuid.uuid4().hex[:12]}")
    try:
        container.upload_blob("data/a.csv", b"x,y\n1,2\n")
        first = hub.stage(f"hub://{container.container_name}/data/", service=service)
        second = hub.stage(f"hub://{container.container_name}/data/", service=_RenamedAccount(service, "hubtwo"))
    finally:
        container.delete_container()
    assert first.directory == tmp_path / "caches" / emulator.ACCOUNT / container.container_name
    assert second.directory == tmp_path / "caches" / "hubtwo" / container.container_name
    assert (first.downloaded, second.downloaded) == (1, 1)  # nothing taken from the other account's cache
    assert (first.directory / "data/a.csv").read_bytes() == (second.directory / "data/a.csv").read_bytes()


@pytest.mark.parametrize(
    ("account", "segment"),
    [("hubstore01", "hubstore01"), (None, "default-account-"), ("../etc", "---etc-"), ("a/b", "a-b-")],
)
def test_an_account_name_is_one_safe_path_segment(tmp_path, monkeypatch, account, segment) -> None:
    monkeypatch.setenv(hub.CACHE_VARIABLE, str(tmp_path))
    path = hub.default_cache(account, "data")
    assert path.parent.parent == tmp_path and path.name == "data"
    assert path.parent.name.startswith(segment) and "/" not in path.parent.name and path.parent.name != ".."
