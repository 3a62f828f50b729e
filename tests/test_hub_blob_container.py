"""The Hub's blob container, made through the blob service: the account key from the Hub stand-in's
`listKeys` (tests/harness/hub_arm.py, at the profile's Storage version), the container itself on
Azurite, watched at the wire by the recording proxy (blob API 2019-07-07, Shared Key)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, PublicAccess

from providers.hub_arm_resource import HUB_API_VERSIONS, HubArmError, HubArmResourceProvider, arm_path
from providers.hub_blob_container import BLOB_API_VERSION, HubBlobContainerError, HubBlobContainerProvider
from tests.harness import services
from tests.harness.arm_server import RecordingTransport
from tests.harness.http_proxy import Wire
from tests.harness.hub_arm import HubArm, Reply, serve_hub_arm
from training import emulator

HUB_VARIABLES = ("CLIENT_ID", "CLIENT_SECRET", "CLIENT_CERTIFICATE_PATH", "USE_OIDC", "USE_MSI", "TENANT_ID")
ACCOUNT = emulator.ACCOUNT  # the Hub account and Azurite's are one, so listKeys' key opens Azurite


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubArm]:
    for name in HUB_VARIABLES:
        monkeypatch.delenv(f"HUB_ARM_{name}", raising=False)
    with serve_hub_arm(tmp_path) as stand_in:
        monkeypatch.setenv("HUB_ARM_CLIENT_ID", stand_in.client_id)
        monkeypatch.setenv("HUB_ARM_CLIENT_SECRET", stand_in.client_secret)
        stand_in.storage_keys[ACCOUNT] = emulator.ACCOUNT_KEY
        yield stand_in


def account(hub: HubArm) -> dict[str, Any]:
    return {
        "armEndpoint": hub.url,
        "subscriptionId": hub.subscription_id,
        "tenantId": None,
        "identityProvider": "adfs",
        "resourceProviderNamespace": "Microsoft.Storage",
        "resourceType": "storageAccounts",
        "parentResourcePath": "",
        "resourceName": ACCOUNT,
        "resourceGroupName": hub.resource_group,
        "apiVersion": HUB_API_VERSIONS["Microsoft.Storage"],
        "location": "local",
        "sku": {"name": "Standard_LRS"},
        "kind": "Storage",
        "tags": {"project": "edge-training", "stack": "test"},
        "properties": {"supportsHttpsTrafficOnly": True},
        "secretProperties": None,
        "observedProperties": None,
    }


@pytest.fixture
def hub_account(hub: HubArm) -> dict[str, Any]:
    HubArmResourceProvider(transport=hub.transport()).create(account(hub))
    return account(hub)


@pytest.fixture
def blob_transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def provider(hub: HubArm, blob_transport: RecordingTransport) -> HubBlobContainerProvider:
    return HubBlobContainerProvider(transport=hub.transport(), blob_transport=blob_transport)


@pytest.fixture
def azurite_blobs(azurite: services.Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def container(hub: HubArm, wire: Wire, name: str | None = None, **changes: Any) -> dict[str, Any]:
    """The container's inputs as HubStorage declares them; its blob endpoint is the proxy's."""
    return {
        "armEndpoint": hub.url,
        "subscriptionId": hub.subscription_id,
        "tenantId": None,
        "identityProvider": "adfs",
        "resourceGroupName": hub.resource_group,
        "accountName": ACCOUNT,
        "blobEndpoint": wire.proxy.blob_endpoint(ACCOUNT) + "/",
        "containerName": name or f"c{uuid.uuid4().hex[:12]}",
        "adopted": None,
        "publicAccess": None,
        **changes,
    }


def container_requests(wire: Wire, name: str) -> list[Any]:
    return [r for r in wire.proxy.recorded() if r.path.split("?")[0] == f"/{ACCOUNT}/{name}"]


def test_the_container_lives_and_dies_through_the_blob_service_at_2019_07_07(
    hub: HubArm, hub_account: dict[str, Any], provider: HubBlobContainerProvider, wire: Wire, azurite_blobs: Any
) -> None:
    props = container(hub, wire)
    name = props["containerName"]
    created = provider.create(props)
    outs = created.outs or {}
    assert azurite_blobs.get_container_client(name).get_container_properties().public_access is None
    assert outs["adopted"] is False and outs["publicAccess"] is None
    # No key anywhere in what the state keeps.
    assert emulator.ACCOUNT_KEY not in repr(outs) and emulator.ACCOUNT_KEY not in created.id

    # Refresh: still there; the state stays as it was.
    read = provider.read(created.id, outs)
    assert read.id == created.id and read.outs == outs
    assert provider.diff(created.id, outs, props).changes is False

    provider.delete(created.id, outs)
    assert name not in [c.name for c in azurite_blobs.list_containers()]
    assert provider.read(created.id, outs).id is None  # refresh notices it is gone
    provider.delete(created.id, outs)  # and a second delete is no error

    # Every data-plane request at the Hub's blob version, signed with the account's Shared Key.
    seen = container_requests(wire, name)
    assert {(r.method, r.headers.get("x-ms-version")) for r in seen} == {
        ("PUT", BLOB_API_VERSION),
        ("GET", BLOB_API_VERSION),
        ("DELETE", BLOB_API_VERSION),
    }
    assert all(r.headers["authorization"].startswith(f"SharedKey {ACCOUNT}:") for r in seen)
    # The key came from listKeys at the profile's Storage version; Resource Manager saw no container path.
    list_keys = [r for r in hub.requests if r.method == "POST" and r.path.endswith(f"/{ACCOUNT}/listKeys")]
    assert list_keys and all(r.query["api-version"] == ["2019-06-01"] for r in list_keys)
    assert not [r for r in hub.requests if "containers" in r.path.lower()]
    assert hub.outside_profile() == []


def test_the_hub_stand_in_refuses_the_arm_container_path(hub: HubArm, hub_account: dict[str, Any]) -> None:
    """What `pulumi up` did before: a container through Resource Manager. A Hub has no such type."""
    arm_container = {
        **account(hub),
        "resourceType": "containers",
        "parentResourcePath": f"storageAccounts/{ACCOUNT}/blobServices/default",
        "resourceName": "training-data",
        "location": None,
        "sku": None,
        "kind": None,
        "tags": None,
        "properties": {"publicAccess": "None"},
    }
    with pytest.raises(
        HubArmError, match=r"InvalidResourceType.*storageAccounts/blobServices/containers. could not be found"
    ):
        HubArmResourceProvider(transport=hub.transport()).create(arm_container)
    assert hub.resource(arm_path(arm_container)) is None


def test_an_existing_private_container_is_adopted_and_kept_on_delete(
    hub: HubArm, hub_account: dict[str, Any], provider: HubBlobContainerProvider, wire: Wire, azurite_blobs: Any
) -> None:
    props = container(hub, wire)
    existing = azurite_blobs.create_container(props["containerName"])
    existing.upload_blob("rows.csv", b"a,b\n1,2\n")
    created = provider.create(props)
    assert (created.outs or {})["adopted"] is True
    provider.delete(created.id, created.outs or {})
    assert existing.download_blob("rows.csv").readall() == b"a,b\n1,2\n"  # the data is still there
    existing.delete_container()


def test_an_existing_public_container_is_refused_with_the_reason(
    hub: HubArm, hub_account: dict[str, Any], provider: HubBlobContainerProvider, wire: Wire, azurite_blobs: Any
) -> None:
    props = container(hub, wire)
    existing = azurite_blobs.create_container(props["containerName"], public_access=PublicAccess.Container)
    try:
        with pytest.raises(HubBlobContainerError, match=r"anonymous container access.*remove its public access"):
            provider.create(props)
        assert existing.get_container_properties().public_access == "container"  # left as it was
    finally:
        existing.delete_container()


def test_a_key_the_blob_service_refuses_fails_with_no_key_in_the_error(
    hub: HubArm, hub_account: dict[str, Any], provider: HubBlobContainerProvider, wire: Wire, azurite_blobs: Any
) -> None:
    wrong = "V3JvbmcgYnV0IHdlbGwtZm9ybWVkIGtleSBmb3IgdGhlIHRlc3Qgb2YgcmVmdXNhbHMgISE="
    hub.storage_keys[ACCOUNT] = wrong
    props = container(hub, wire)
    with pytest.raises(HubBlobContainerError, match=f"blob container '{props['containerName']}'") as caught:
        provider.create(props)
    assert wrong not in str(caught.value)
    assert props["containerName"] not in [c.name for c in azurite_blobs.list_containers()]


def test_a_throttled_hub_and_a_busy_blob_service_are_retried(
    hub: HubArm,
    hub_account: dict[str, Any],
    provider: HubBlobContainerProvider,
    blob_transport: RecordingTransport,
    wire: Wire,
    azurite_blobs: Any,
) -> None:
    hub.inject(
        "POST",
        r"/listKeys$",
        Reply(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "2"}),
    )
    props = container(hub, wire)
    busy = [1]

    def refuse_once(method: str, path: str) -> tuple[int, str, str] | None:
        if method == "PUT" and busy and path.startswith(f"/{ACCOUNT}/{props['containerName']}"):
            busy.pop()
            return (503, "ServerBusy", "The server is busy.")
        return None

    wire.on_request = refuse_once
    created = provider.create(props)
    assert (created.outs or {})["adopted"] is False  # the retried PUT made it; nothing mistaken for adoption
    assert blob_transport.slept  # the storage retry policy waited (recorded, not slept)
    assert len([r for r in hub.requests if r.path.endswith("/listKeys")]) == 2
    azurite_blobs.get_container_client(props["containerName"]).delete_container()


def test_a_missing_account_is_named_and_its_containers_count_as_gone(
    hub: HubArm, provider: HubBlobContainerProvider, wire: Wire
) -> None:
    props = container(hub, wire)
    with pytest.raises(HubBlobContainerError, match=f"storage account '{ACCOUNT}' not found"):
        provider.create(props)
    provider.delete("x", {**props, "adopted": False})  # the account took its containers with it
    assert provider.read("x", props).id is None


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"blobEndpoint": "http://hub.example/"}, "blobEndpoint", "not an https URL"),
        ({"armEndpoint": "http://hub.example/"}, "armEndpoint", "not an https URL"),
        ({"containerName": "Training_Data"}, "containerName", "not valid"),
        ({"containerName": "a--b"}, "containerName", "not valid"),
        ({"accountName": "Not-An-Account"}, "accountName", "not valid"),
        ({"identityProvider": "ldap"}, "identityProvider", "not one of azuread, adfs"),
        ({"caCertificates": "not a certificate"}, "caCertificates", "certificate"),
    ],
)
def test_check_names_the_bad_field_before_any_request(
    hub: HubArm, provider: HubBlobContainerProvider, wire: Wire, change: dict[str, Any], field: str, reason: str
) -> None:
    props = {**container(hub, wire), "blobEndpoint": "https://acct.blob.local.azurestack.external/", **change}
    failures = provider.check({}, props).failures
    assert [(f.property, reason in f.reason) for f in failures] == [(field, True)]
    assert hub.requests == []


def test_the_pickled_provider_holds_no_transport(provider: HubBlobContainerProvider) -> None:
    assert provider.__getstate__() == {}


def test_only_the_sign_in_changing_is_an_update_and_the_rest_replaces(
    hub: HubArm, provider: HubBlobContainerProvider, wire: Wire
) -> None:
    olds = container(hub, wire, name="training-data")
    assert provider.diff("x", olds, {**olds, "tenantId": "t"}).replaces == []
    assert provider.diff("x", olds, {**olds, "tenantId": "t"}).changes is True
    assert provider.diff("x", olds, {**olds, "containerName": "other"}).replaces == ["containerName"]
    assert provider.diff("x", olds, {**olds, "blobEndpoint": "https://new/"}).replaces == ["blobEndpoint"]
