"""HubArmResource's provider, the real code, against a stand-in for a Hub's Resource Manager
(tests/harness/hub_arm.py): sign-in at AD FS, every request at the profile's versions, the edge
lifecycle of the program's own resources, retries, interruptions and failures, secrets."""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dill
import grpc
import pytest
from azure.core import PipelineClient
from azure.core.rest import HttpRequest
from google.protobuf import struct_pb2
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import provider_pb2_grpc

from clients.arm import RETRY_AFTER_MAX, ArmClient, ArmError
from clients.cloud import discover
from clients.credentials import credential_from_environment
from providers.hub_arm_resource import HUB_API_VERSIONS, HubArmError, HubArmResourceProvider, arm_path
from tests.conftest import recorded_stack
from tests.harness.arm_server import RecordingTransport
from tests.harness.hub_arm import Engine, HubArm, Reply, serve_hub_arm
from tests.harness.pulumi_mocks import Recording

HUB_ARM = "pulumi-python:dynamic/edge-training:HubArmResource"
HUB_VARIABLES = ("CLIENT_ID", "CLIENT_SECRET", "CLIENT_CERTIFICATE_PATH", "USE_OIDC", "USE_MSI", "TENANT_ID")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubArm]:
    for name in HUB_VARIABLES:
        monkeypatch.delenv(f"HUB_ARM_{name}", raising=False)
    with serve_hub_arm(tmp_path) as stand_in:
        monkeypatch.setenv("HUB_ARM_CLIENT_ID", stand_in.client_id)
        monkeypatch.setenv("HUB_ARM_CLIENT_SECRET", stand_in.client_secret)
        yield stand_in


@pytest.fixture
def transport(hub: HubArm) -> RecordingTransport:
    return hub.transport()


@pytest.fixture
def provider(transport: RecordingTransport) -> HubArmResourceProvider:
    return HubArmResourceProvider(transport=transport)


@pytest.fixture
def program() -> Callable[..., Recording]:
    """The real program under mocks, configured for an AD FS Hub (like the stand-in)."""

    def run(**overrides: Any) -> Recording:
        return recorded_stack({"hubIdentityProvider": "adfs", "hubTenantId": None, **overrides})

    return run


def test_the_edge_lifecycle_runs_against_a_hub_at_the_profiles_versions_only(
    hub: HubArm, provider: HubArmResourceProvider, program: Callable[..., Recording]
) -> None:
    engine = Engine(provider, hub)
    declared = engine.declared(program())
    kinds = [inputs["resourceType"] for _, inputs in declared]
    # The VM's extension: the K3s script's day-two channel (docs/operate/day-two.md).
    assert sorted(kinds) == sorted(
        ["storageAccounts", "networkSecurityGroups", "virtualNetworks", "publicIPAddresses",
         "networkInterfaces", "virtualMachines", "extensions"]
    )  # fmt: skip

    # Create, in the program's dependency order (the stand-in refuses dangling references).
    actions = engine.up(declared, hub.url)
    assert set(actions.values()) == {"create"}
    assert len(hub.resources) == 7
    for resource in hub.resources.values():
        assert resource["properties"].get("provisioningState", "Succeeded") == "Succeeded", resource["id"]
    pip = next(outs for name, (_, outs) in engine.state.items() if name.endswith("-pip"))
    assert pip["observedProperties"]["ipAddress"].startswith("192.0.2.")  # what property_of reads

    # Refresh: everything still there, and no difference to the program.
    for name, read in engine.refresh().items():
        assert read.id == engine.state[name][0]
    assert set(engine.up(declared, hub.url).values()) == {"same"}

    # A tag changes: every tagged resource is updated in place, nothing replaced.
    tagged = engine.declared(program(tags=["owner=data-team"]))
    actions = engine.up(tagged, hub.url)
    assert set(actions.values()) == {"update"}
    assert all(r.get("tags", {}).get("owner") == "data-team" for r in hub.resources.values() if "tags" in r)

    # The VM image changes: the VM is replaced (the Hub refuses that change in place), nothing else.
    vm_path = engine.state["hub-vm-vm"][0].lower()
    old_vm_id = hub.resources[vm_path]["properties"]["vmId"]
    reimaged = engine.declared(program(tags=["owner=data-team"], hubImageVersion="22.04.202411010"))
    actions = engine.up(reimaged, hub.url)
    # (The Pulumi engine also replaces the VM's extension, whose parentResourcePath is the VM's
    # output: a dependent of a delete-before-replace resource. This Engine does not model that.)
    assert actions == {name: ("replace" if name == "hub-vm-vm" else "same") for name, _ in reimaged}
    vm = hub.resources[vm_path]["properties"]
    assert vm["storageProfile"]["imageReference"]["version"] == "22.04.202411010"
    assert vm["vmId"] != old_vm_id

    # Delete in reverse dependency order (the stand-in refuses deleting what is in use).
    engine.destroy()
    assert hub.resources == {}

    # Every kind of request was made, and none at a version outside the profile.
    seen = {(r.method, "operations" in r.path) for r in hub.arm_requests()}
    assert {("GET", False), ("PUT", False), ("DELETE", False), ("GET", True)} <= seen
    # One metadata read and one token for the whole run (the provider host is one process).
    assert len([r for r in hub.requests if r.path == "/adfs/oauth2/token"]) == 1
    assert len([r for r in hub.requests if r.path == "/metadata/endpoints"]) == 1
    assert hub.outside_profile() == []


def test_the_stand_in_refuses_versions_outside_the_profile(hub: HubArm, transport: RecordingTransport) -> None:
    """What made azure-native's generic resource fail on a Hub: its existence check at its own
    version. The stand-in answers that like a Hub, so the lifecycle test above means something."""
    cloud = discover(hub.url, transport=transport)
    credential = credential_from_environment(prefix="HUB_ARM_", cloud=cloud, transport=transport)
    group = f"/subscriptions/{hub.subscription_id}/resourceGroups/{hub.resource_group}"
    path = f"{group}/providers/Microsoft.Network/networkSecurityGroups/x"
    with ArmClient(cloud, credential, transport=transport) as client:
        assert client.get(path, "2018-11-01") is None  # the profile's version: 404, it does not exist
        with pytest.raises(ArmError, match="NoRegisteredProviderFound"):
            # The generic resource's own version, Microsoft.Resources 2024-03-01 in azure-native 3.x,
            # which its existence check sends (pulumi/pulumi-azure-native#4109).
            client.get(path, "2024-03-01")
        with pytest.raises(ArmError, match="InvalidApiVersionParameter"):
            client.get(path, "latest")
    assert discover(hub.url, transport=transport).uses_adfs
    # The metadata format azure-native's provider reads (2022-09-01) is not served either.
    answer = PipelineClient(hub.url, transport=transport).send_request(
        HttpRequest("GET", f"{hub.url}/metadata/endpoints", params={"api-version": "2022-09-01"})
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidApiVersionParameter"


# --- single resources -------------------------------------------------------------------------


def nsg(hub: HubArm, name: str = "nsg-edge-test", **changes: Any) -> dict[str, Any]:
    """A network security group's inputs, as declare() makes them."""
    return {
        "armEndpoint": hub.url,
        "subscriptionId": hub.subscription_id,
        "tenantId": None,
        "identityProvider": "adfs",
        "resourceProviderNamespace": "Microsoft.Network",
        "resourceType": "networkSecurityGroups",
        "parentResourcePath": "",
        "resourceName": name,
        "resourceGroupName": hub.resource_group,
        "apiVersion": HUB_API_VERSIONS["Microsoft.Network"],
        "location": "local",
        "sku": None,
        "kind": None,
        "tags": {"project": "edge-training", "stack": "test"},
        "properties": {"securityRules": []},
        "secretProperties": None,
        "observedProperties": None,
        **changes,
    }


def puts(hub: HubArm, name: str) -> list[Any]:
    return [r for r in hub.requests if r.method == "PUT" and r.path.endswith(f"/{name}")]


def test_throttling_and_server_errors_are_retried_honouring_retry_after(
    hub: HubArm, provider: HubArmResourceProvider, transport: RecordingTransport
) -> None:
    hub.inject("GET", r"networkSecurityGroups/nsg-edge-test$", Reply(500, {"error": {"code": "InternalServerError"}}))
    hub.inject(
        "PUT",
        r"networkSecurityGroups/nsg-edge-test$",
        Reply(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "7"}),
    )
    created = provider.create(nsg(hub))
    assert created.id.endswith("/networkSecurityGroups/nsg-edge-test")
    assert len(puts(hub, "nsg-edge-test")) == 2  # the 429, then the accepted one
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("/nsg-edge-test")]
    assert len(gets) >= 2  # the 500, then the existence check that found nothing
    assert 7 in transport.slept  # Retry-After honoured (waits are recorded, not slept)
    assert hub.outside_profile() == []


def test_a_huge_retry_after_is_capped(
    hub: HubArm, provider: HubArmResourceProvider, transport: RecordingTransport
) -> None:
    hub.inject("PUT", r"nsg-edge-test$", Reply(503, {"error": {"code": "ServerBusy"}}, {"Retry-After": "86400"}))
    provider.create(nsg(hub))
    assert RETRY_AFTER_MAX in transport.slept
    assert max(transport.slept) <= RETRY_AFTER_MAX


def test_a_slow_throttling_hub_is_waited_out_for_real(hub: HubArm) -> None:
    """The requests transport really sleeps here: every answer 50 ms late, one 429 asking for 1 s,
    the create's operation polled after its Retry-After of 1 s."""
    from azure.core.pipeline.transport import RequestsTransport

    hub.latency_s = 0.05
    hub.inject("PUT", r"nsg-edge-test$", Reply(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "1"}))
    real = RequestsTransport(connection_verify=str(hub.ca_file))
    started = time.monotonic()
    created = HubArmResourceProvider(transport=real).create(nsg(hub))
    elapsed = time.monotonic() - started
    real.close()
    assert created.id.endswith("/networkSecurityGroups/nsg-edge-test")
    assert len(puts(hub, "nsg-edge-test")) == 2
    assert 2.0 <= elapsed < 20


class Interrupted(BaseException):
    """The process going away: nothing in the provider catches it."""


class DyingTransport(RecordingTransport):
    """Sends the PUT, then the process dies before it reads the answer: the Hub accepted a
    create that nobody waits for."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        if request.method == "PUT":
            raise Interrupted
        return response


def test_an_interrupted_create_is_finished_by_the_rerun(hub: HubArm) -> None:
    dying = HubArmResourceProvider(transport=DyingTransport(connection_verify=str(hub.ca_file)))
    with pytest.raises(Interrupted):
        dying.create(nsg(hub))
    path = arm_path(nsg(hub)).lower()
    assert hub.resources[path]["properties"]["provisioningState"] == "Creating"
    # The rerun (a fresh process) finds the stack's own resource and finishes it.
    rerun = HubArmResourceProvider(transport=hub.transport())
    created = rerun.create(nsg(hub))
    assert created.id.lower() == path
    assert hub.resources[path]["properties"]["provisioningState"] == "Succeeded"
    assert len(puts(hub, "nsg-edge-test")) == 2
    # And `pulumi refresh` importing the pending create (read with the inputs) works too.
    assert rerun.read(created.id, nsg(hub)).id == created.id


def test_someone_elses_resource_is_not_taken_over(hub: HubArm, provider: HubArmResourceProvider) -> None:
    provider.create(nsg(hub, tags={"project": "other", "stack": "prod"}))
    hub.requests.clear()
    with pytest.raises(HubArmError, match=r"already exists.*to import it.*project=edge-training, stack=test"):
        provider.create(nsg(hub))
    assert not [r for r in hub.requests if r.method == "PUT"]
    # Tagged as this stack's (how an operator imports it), the next run adopts it.
    hub.resources[arm_path(nsg(hub)).lower()]["tags"] = {"project": "edge-training", "stack": "test"}
    assert provider.create(nsg(hub)).id.lower() == arm_path(nsg(hub)).lower()


def test_a_failed_provisioning_is_removed_so_a_rerun_can_create_it(
    hub: HubArm, provider: HubArmResourceProvider
) -> None:
    hub.fail_provisioning("nsg-edge-test", "InternalOperationError", "the fabric could not allocate the rule set")
    with pytest.raises(HubArmError, match="InternalOperationError: the fabric could not allocate"):
        provider.create(nsg(hub))
    assert hub.resources == {}  # the Failed leftover was deleted
    provider.create(nsg(hub))
    assert len(hub.resources) == 1


def test_a_failed_update_keeps_the_resource(hub: HubArm, provider: HubArmResourceProvider) -> None:
    created = provider.create(nsg(hub))
    hub.fail_provisioning("nsg-edge-test", "InternalOperationError", "update failed")
    news = nsg(hub, tags={"project": "edge-training", "stack": "test", "owner": "x"})
    with pytest.raises(HubArmError, match="update failed"):
        provider.update(created.id, created.outs or {}, news)
    assert arm_path(nsg(hub)).lower() in hub.resources  # never deleted for a failed update


def test_refresh_notices_a_resource_deleted_or_retagged_by_hand(hub: HubArm, provider: HubArmResourceProvider) -> None:
    created = provider.create(nsg(hub))
    path = arm_path(nsg(hub)).lower()
    hub.resources[path]["tags"] = {"project": "edge-training", "stack": "test", "added": "by-hand"}
    read = provider.read(created.id, created.outs or {})
    assert read.outs["tags"]["added"] == "by-hand"
    diff = provider.diff(created.id, read.outs, nsg(hub))
    assert diff.changes and not diff.replaces  # the next `up` puts the declared tags back
    del hub.resources[path]
    assert provider.read(created.id, created.outs or {}).id is None
    provider.delete(created.id, created.outs or {})  # already gone: no error


def test_an_in_place_image_change_is_refused_by_the_hub_hence_the_replace(
    hub: HubArm, provider: HubArmResourceProvider, program: Callable[..., Recording]
) -> None:
    engine = Engine(provider, hub)
    engine.up(engine.declared(program()), hub.url)
    reimaged = dict(engine.declared(program(hubImageVersion="22.04.202411010")))
    news = engine._resolve({**reimaged["hub-vm-vm"], "armEndpoint": hub.url})
    id_, olds = engine.state["hub-vm-vm"]
    assert provider.diff(id_, olds, news).replaces == ["properties"]
    with pytest.raises(HubArmError, match="PropertyChangeNotAllowed"):
        provider.update(id_, olds, news)
    engine.destroy()


# --- check: before any request ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        ({"resourceName": ""}, "resourceName", "is required"),
        ({"resourceName": "a/b"}, "resourceName", "not valid"),
        ({"armEndpoint": "http://hub.example"}, "armEndpoint", "not an https URL"),
        ({"apiVersion": "2024-03-01"}, "apiVersion", "profile 2020-09-01-hybrid has 2018-11-01"),
        ({"resourceProviderNamespace": "Microsoft.ContainerService"}, "resourceProviderNamespace", "not in"),
        ({"properties": ["x"]}, "properties", "must be an object"),
        ({"tags": {"owner": 3}}, "tags", "must be a string"),
        ({"identityProvider": "okta"}, "identityProvider", "not one of"),
        ({"secretProperties": "s3cr3t-value"}, "secretProperties", "must be an object, not str"),
        ({"location": None}, "location", "location is required for networkSecurityGroups"),
    ],
)
def test_check_names_the_bad_field_before_any_request(
    hub: HubArm, provider: HubArmResourceProvider, change: dict[str, Any], field: str, said: str
) -> None:
    result = provider.check({}, nsg(hub, **change))
    assert [(f.property, said in f.reason) for f in result.failures] == [(field, True)], result.failures
    assert "s3cr3t-value" not in " ".join(f.reason for f in result.failures)
    assert hub.requests == []


def test_check_requires_what_the_type_requires(hub: HubArm, provider: HubArmResourceProvider) -> None:
    vm = vm_inputs(hub, hardwareProfile={})
    assert [(f.property, f.reason) for f in provider.check({}, vm).failures] == [
        ("properties", "properties.hardwareProfile.vmSize is required for virtualMachines")
    ]


def test_check_lets_unknown_values_through_during_preview(hub: HubArm, provider: HubArmResourceProvider) -> None:
    result = provider.check({}, nsg(hub, resourceName=rpc.UNKNOWN, properties=rpc.UNKNOWN))
    assert result.failures == []


# --- diff ---------------------------------------------------------------------------------------


def vm_inputs(hub: HubArm, **properties: Any) -> dict[str, Any]:
    base = {
        "hardwareProfile": {"vmSize": "Standard_DS2_v2"},
        "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "o", "sku": "s", "version": "1"}},
        "osProfile": {"adminUsername": "azureuser", "computerName": "vm"},
        "networkProfile": {"networkInterfaces": [{"id": "/nic/a"}]},
    }
    return nsg(
        hub,
        name="vm-edge-test",
        resourceProviderNamespace="Microsoft.Compute",
        resourceType="virtualMachines",
        apiVersion="2020-06-01",
        properties={**base, **properties},
        secretProperties={"osProfile": {"customData": "I2Nsb3VkLWNvbmZpZwo="}},
    )


@pytest.mark.parametrize(
    ("change", "replaces"),
    [
        ({}, None),
        ({"tags": {"project": "edge-training", "stack": "test", "owner": "x"}}, []),
        ({"properties": {"hardwareProfile": {"vmSize": "Standard_DS3_v2"}}}, []),  # a resize happens in place
        ({"properties": {"storageProfile": {"imageReference": {"version": "2"}}}}, ["properties"]),
        ({"properties": {"osProfile": {"adminUsername": "root2"}}}, ["properties"]),
        ({"properties": {"networkProfile": {"networkInterfaces": [{"id": "/nic/b"}]}}}, ["properties"]),
        ({"secretProperties": {"osProfile": {"customData": "Y2hhbmdlZAo="}}}, ["secretProperties"]),
        ({"resourceName": "vm-other"}, ["resourceName"]),
        ({"location": "elsewhere"}, ["location"]),
        ({"parentResourcePath": rpc.UNKNOWN}, ["parentResourcePath"]),  # a parent being replaced
    ],
    ids=["same", "tag", "size", "image", "admin", "nic", "custom-data", "name", "location", "parent-unknown"],
)
def test_diff_updates_in_place_what_the_hub_can_change_and_replaces_the_rest(
    hub: HubArm, provider: HubArmResourceProvider, change: dict[str, Any], replaces: list[str] | None
) -> None:
    olds = vm_inputs(hub)
    news = copy.deepcopy(olds)
    for key, value in change.items():
        news[key] = _merged(news[key], value) if isinstance(value, dict) and isinstance(news[key], dict) else value
    diff = provider.diff("id", olds, news)
    if replaces is None:
        assert not diff.changes
    else:
        assert diff.changes and diff.replaces == replaces
        assert diff.delete_before_replace


def _merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    from providers.hub_arm_resource import merge

    return merge(base, overlay)


def test_a_storage_accounts_kind_is_replaced(hub: HubArm, provider: HubArmResourceProvider) -> None:
    account = nsg(hub, resourceProviderNamespace="Microsoft.Storage", resourceType="storageAccounts", kind="Storage")
    assert provider.diff("id", account, {**account, "kind": "StorageV2"}).replaces == ["kind"]


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_stay_out_of_errors_and_plain_outputs(
    hub: HubArm, provider: HubArmResourceProvider, program: Callable[..., Recording]
) -> None:
    engine = Engine(provider, hub)
    engine.up(engine.declared(program()), hub.url)
    _, vm = engine.state["hub-vm-vm"]
    custom_data = vm["secretProperties"]["osProfile"]["customData"]
    assert "customData" not in vm["observedProperties"]["osProfile"]
    assert "customData" not in vm["properties"]["osProfile"]
    # A Hub error that quotes the custom data does not carry it into Pulumi's output.
    hub.inject(
        "PUT",
        r"virtualMachines/",
        Reply(400, {"error": {"code": "InvalidParameter", "message": f"bad customData {custom_data}"}}),
    )
    news = {**vm, "tags": {**vm["tags"], "owner": "x"}}
    with pytest.raises(HubArmError) as raised:
        provider.update(engine.state["hub-vm-vm"][0], vm, news)
    assert custom_data not in str(raised.value) and "[secret]" in str(raised.value)
    engine.destroy()


def test_a_hub_that_echoes_a_secret_does_not_put_it_in_plain_outputs(
    hub: HubArm, provider: HubArmResourceProvider, program: Callable[..., Recording]
) -> None:
    """The stand-in above never echoes customData (nor does Azure); this one does, so the filter
    of secrets out of `observedProperties` is exercised, not assumed."""
    hub.echoes_write_only = True
    engine = Engine(provider, hub)
    engine.up(engine.declared(program()), hub.url)
    _, vm = engine.state["hub-vm-vm"]
    custom_data = vm["secretProperties"]["osProfile"]["customData"]
    echoed = hub.resource(
        next(k for k in hub.resources if k.endswith("/virtualmachines/" + vm["resourceName"].lower()))
    )
    assert echoed is not None and echoed["properties"]["osProfile"]["customData"] == custom_data  # it is echoed
    assert "customData" not in vm["observedProperties"]["osProfile"]
    assert custom_data not in repr(vm["observedProperties"]) and custom_data not in repr(vm["properties"])
    read = provider.read(engine.state["hub-vm-vm"][0], vm)
    assert custom_data not in repr(read.outs.get("observedProperties"))
    engine.destroy()


def test_the_pickled_provider_holds_no_client_credential_or_transport(
    transport: RecordingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_ARM_CLIENT_SECRET", "a-hub-secret-that-must-not-travel")
    pickled = base64.b64decode(serialize_provider(HubArmResourceProvider(transport=transport)))
    assert b"a-hub-secret" not in pickled and b"Transport" not in pickled
    assert dill.loads(pickled)._transport is None  # noqa: S301 (our own bytes)


def test_the_identity_provider_must_match_the_hubs_metadata(hub: HubArm, provider: HubArmResourceProvider) -> None:
    with pytest.raises(HubArmError, match="hubIdentityProvider"):
        provider.create(nsg(hub, identityProvider="azuread", tenantId="00000000-0000-0000-0000-000000000002"))
    assert not [r for r in hub.requests if r.path.startswith("/subscriptions/")]


@pytest.mark.parametrize("variable", ["HUB_ARM_USE_OIDC", "HUB_ARM_USE_MSI"])
def test_an_adfs_hub_refuses_entra_only_sign_in_before_any_request(
    hub: HubArm, provider: HubArmResourceProvider, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "true")
    with pytest.raises(HubArmError, match=rf"{variable} cannot sign in to an AD FS Hub.*Entra ID tokens"):
        provider.create(nsg(hub))
    assert hub.requests == []  # not even the metadata
    # Whoever discovers the Hub first (the CLI, the attach step) is refused the same way.
    cloud = discover(hub.url, transport=hub.transport())
    with pytest.raises(ValueError, match=f"{variable} cannot sign in to an AD FS Hub"):
        credential_from_environment(prefix="HUB_ARM_", cloud=cloud)
    monkeypatch.setenv(variable, "false")  # off is no refusal
    provider.create(nsg(hub))


def test_a_wrong_secret_fails_sign_in_with_no_secret_in_the_error(
    hub: HubArm, provider: HubArmResourceProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_ARM_CLIENT_SECRET", "wrong-secret-value")
    with pytest.raises(Exception) as raised:
        provider.create(nsg(hub))
    assert "wrong-secret-value" not in str(raised.value)
    assert hub.resources == {}


def test_bodies_the_versions_model_refuses_are_refused_by_the_stand_in(
    hub: HubArm, provider: HubArmResourceProvider
) -> None:
    with pytest.raises(HubArmError, match="InvalidRequestContent"):
        provider.create(nsg(hub, properties={"securityRules": [], "flushConnection": True}))  # newer than 2018-11-01
    assert hub.resources == {}


def test_the_stand_in_holds_the_order_a_hub_holds(
    hub: HubArm, provider: HubArmResourceProvider, program: Callable[..., Recording]
) -> None:
    """Why the lifecycle's order matters: a reference to a missing resource and the deletion of a
    resource in use are refused, as on a Hub."""
    engine = Engine(provider, hub)
    declared = dict(engine.declared(program()))
    with pytest.raises(HubArmError, match="InvalidResourceReference"):  # a NIC before its subnet
        engine.up([("hub-network-nic", declared["hub-network-nic"])], hub.url)
    engine.up(list(engine.declared(program())), hub.url)
    nsg_id, nsg_outs = engine.state["hub-network-nsg"]
    with pytest.raises(HubArmError, match="InUseNetworkSecurityGroupCannotBeDeleted"):
        provider.delete(nsg_id, nsg_outs)
    engine.destroy()
    assert hub.resources == {}


def test_an_unregistered_provider_is_reported_not_registered_at_another_version(
    hub: HubArm, provider: HubArmResourceProvider
) -> None:
    """azure-mgmt-core's default pipeline would register the provider at api-version 2016-02-01;
    on a Hub the operator registers providers through offers, and we send only the profile's versions."""
    hub.inject(
        "PUT",
        r"nsg-edge-test$",
        Reply(
            409,
            {
                "error": {
                    "code": "MissingSubscriptionRegistration",
                    "message": "The subscription is not registered to use namespace 'Microsoft.Network'.",
                }
            },
        ),
    )
    with pytest.raises(HubArmError, match="MissingSubscriptionRegistration"):
        provider.create(nsg(hub))
    assert hub.outside_profile() == []
    assert not [r for r in hub.requests if "register" in r.path]


# --- the provider in Pulumi's own dynamic provider host -------------------------------------------


ROOT = Path(__file__).resolve().parent.parent
URN = "urn:pulumi:dev::edge-training::pulumi-python:dynamic/edge-training:HubArmResource::hub-network-nsg"


def test_the_provider_runs_in_pulumis_dynamic_provider_host(hub: HubArm) -> None:
    """What `pulumi up` does with the resource: the provider pickled into the inputs, unpickled by
    `python -m pulumi.dynamic` in another process, driven over gRPC. No transport travels: the
    host trusts the stand-in's CA through REQUESTS_CA_BUNDLE, as an operator would for a Hub
    whose certificates come from an enterprise CA."""
    hub.retry_after = "0.05"  # real waits in this process
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_ARM_")},
        "REQUESTS_CA_BUNDLE": str(hub.ca_file),
        "HUB_ARM_CLIENT_ID": hub.client_id,
        "HUB_ARM_CLIENT_SECRET": hub.client_secret,
    }
    host = subprocess.Popen(
        [sys.executable, "-m", "pulumi.dynamic"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        port = int(host.stdout.readline())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = provider_pb2_grpc.ResourceProviderStub(channel)
        props = {**nsg(hub), "__provider": serialize_provider(HubArmResourceProvider())}
        loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the loop Pulumi's mocks use
        try:
            news = loop.run_until_complete(rpc.serialize_properties(props, {}))
        finally:
            loop.close()
        checked = stub.Check(proto.CheckRequest(urn=URN, olds=struct_pb2.Struct(), news=news))
        assert list(checked.failures) == []
        created = stub.Create(proto.CreateRequest(urn=URN, properties=checked.inputs))
        assert created.id.endswith("/networkSecurityGroups/nsg-edge-test")
        outputs = rpc.deserialize_properties(created.properties)
        assert outputs["observedProperties"]["provisioningState"] == "Succeeded"
        diff = stub.Diff(proto.DiffRequest(urn=URN, id=created.id, olds=created.properties, news=checked.inputs))
        assert diff.changes == proto.DiffResponse.DIFF_NONE
        read = stub.Read(proto.ReadRequest(urn=URN, id=created.id, properties=created.properties))
        assert read.id == created.id
        stub.Delete(proto.DeleteRequest(urn=URN, id=created.id, properties=read.properties))
        channel.close()
    finally:
        host.terminate()
        host.wait(timeout=10)
    assert hub.resources == {}
    assert hub.outside_profile() == []


def test_an_extension_update_reruns_its_handler_even_after_a_failed_attempt(
    hub: HubArm, provider: HubArmResourceProvider
) -> None:
    """Day two's channel: an updated CustomScript extension runs its script again, and a rerun of
    `pulumi up` after a failed run sends the same settings with a new forceUpdateTag."""
    vm = arm_path(vm_inputs(hub))
    hub.resources[vm.lower()] = {"id": vm, "name": "vm-edge-test", "location": "local", "properties": {}}

    def extension(script: str) -> dict[str, Any]:
        return nsg(
            hub,
            name="first-boot",
            resourceProviderNamespace="Microsoft.Compute",
            resourceType="extensions",
            parentResourcePath="virtualMachines/vm-edge-test",
            apiVersion="2020-06-01",
            properties={"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.0"},
            secretProperties={"protectedSettings": {"script": script}},
        )

    created = provider.create(extension("b2xk"))
    assert "forceUpdateTag" not in puts(hub, "first-boot")[-1].body["properties"]
    hub.fail_provisioning("first-boot", "VMExtensionProvisioningError", "Enable failed: stopped at node vm-agent1")
    with pytest.raises(HubArmError, match="stopped at node vm-agent1"):
        provider.update(created.id, created.outs or {}, extension("bmV3"))
    provider.update(created.id, created.outs or {}, extension("bmV3"))  # the engine kept the old state
    failed, rerun = (put.body["properties"] for put in puts(hub, "first-boot")[-2:])
    assert failed["protectedSettings"] == rerun["protectedSettings"]
    assert failed["forceUpdateTag"] and rerun["forceUpdateTag"] and failed["forceUpdateTag"] != rerun["forceUpdateTag"]
    # No other type has the field.
    group = provider.create(nsg(hub))
    provider.update(group.id, group.outs or {}, nsg(hub, tags={"project": "edge-training", "stack": "test", "o": "x"}))
    assert "forceUpdateTag" not in puts(hub, "nsg-edge-test")[-1].body["properties"]
