"""The compute REST client at the HTTP boundary: the real azure-core pipeline sends real HTTPS
requests to a local endpoint; bodies are checked against Microsoft's models of the API version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.ai.ml._restclient.arm_ml_service import models as ml

from clients.cloud import Cloud
from clients.deadline import Deadline
from components.azureml_computes import (
    API_VERSION,
    ComputeApiError,
    ComputeClient,
    ComputeRef,
    VirtualMachineAttachment,
)
from tests.harness.arm_models import rest_field_problems
from tests.harness.arm_server import TEST_TOKEN, ArmEndpoint, RecordingTransport, Reply, StaticCredential
from tests.harness.keys import rsa_key

REF = ComputeRef("11111111-1111-1111-1111-111111111111", "rg-ml", "mlw-dev", "edge-vm")
ATTACHMENT = VirtualMachineAttachment(
    location="westeurope",
    address="192.0.2.10",
    ssh_port=22,
    username="azureuser",
    private_key_pem=rsa_key("vm-admin").private_pem,
    owner="edge-training/dev",
)


def minute() -> Deadline:
    return Deadline(60)


GONE = Reply(404, {"error": {"code": "NotFound", "message": "no such compute"}})

# Which model describes each nested object of a VirtualMachine compute request, at API_VERSION.
NESTED: dict[type, dict[str, type]] = {
    ml.ComputeResource: {"properties": ml.VirtualMachine},
    ml.VirtualMachine: {"properties": ml.VirtualMachineSchemaProperties},
    ml.VirtualMachineSchemaProperties: {"administratorAccount": ml.VirtualMachineSshCredentials},
    ml.VirtualMachineSshCredentials: {},
}


def schema_problems(body: dict[str, Any]) -> list[str]:
    return rest_field_problems(body, ml.ComputeResource, NESTED)


def test_the_azure_ai_ml_client_targets_the_same_api_version() -> None:
    """Our version is the one Microsoft's own client (and the models checked here) are built for."""
    import inspect

    from azure.ai.ml._restclient.arm_ml_service import _configuration

    assert f'"api_version", "{API_VERSION}"' in inspect.getsource(_configuration)


@pytest.fixture
def transport(arm: ArmEndpoint) -> RecordingTransport:
    return arm.transport()


@pytest.fixture
def client(arm: ArmEndpoint, transport: RecordingTransport) -> Iterator[ComputeClient]:
    cloud = Cloud(arm.url + "/", "https://login.microsoftonline.com/", "https://management.core.windows.net/")
    with ComputeClient(StaticCredential(), cloud, transport=transport, poll_seconds=0, sleep=lambda _: None) as c:
        yield c


def compute(state: str, **properties: Any) -> dict[str, Any]:
    return {
        "id": REF.path,
        "name": REF.name,
        "properties": {"computeType": "VirtualMachine", "provisioningState": state, **properties},
    }


def test_attach_sends_the_documented_request_and_waits_for_success(arm: ArmEndpoint, client: ComputeClient) -> None:
    arm.fake.script("PUT", REF.path, Reply(201, compute("Creating")))
    arm.fake.script("GET", REF.path, GONE, Reply(200, compute("Creating")), Reply(200, compute("Succeeded")))
    result = client.attach(REF, ATTACHMENT, Deadline(60))
    assert result["properties"]["provisioningState"] == "Succeeded"

    put = arm.fake.requests[1]
    assert put.method == "PUT"
    assert put.path == (
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ml/providers/"
        "Microsoft.MachineLearningServices/workspaces/mlw-dev/computes/edge-vm"
    )
    assert put.query == {"api-version": [API_VERSION]}
    assert put.headers["authorization"] == f"Bearer {TEST_TOKEN}"
    assert put.body["location"] == "westeurope"
    vm = put.body["properties"]
    assert vm["computeType"] == "VirtualMachine"
    assert vm["properties"]["address"] == "192.0.2.10"
    assert vm["properties"]["sshPort"] == 22
    assert vm["properties"]["administratorAccount"] == {
        "username": "azureuser",
        "privateKeyData": rsa_key("vm-admin").private_pem,
    }
    assert "resourceId" not in vm
    assert schema_problems(put.body) == []
    assert [r.method for r in arm.fake.requests] == ["GET", "PUT", "GET", "GET"]


def test_a_configured_resource_id_is_sent(arm: ArmEndpoint, client: ComputeClient) -> None:
    vm_id = (
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/"
        "Microsoft.Compute/virtualMachines/vm"
    )
    arm.fake.script("GET", REF.path, GONE)
    arm.fake.script("PUT", REF.path, Reply(200, compute("Succeeded")))
    client.attach(REF, VirtualMachineAttachment(**{**ATTACHMENT.__dict__, "resource_id": vm_id}), minute())
    assert arm.fake.requests[1].body["properties"]["resourceId"] == vm_id
    assert schema_problems(arm.fake.requests[1].body) == []


def test_the_schema_check_catches_unknown_and_read_only_fields() -> None:
    body = ATTACHMENT.body()
    body["properties"]["properties"]["madeUp"] = 1
    body["properties"]["provisioningState"] = "Succeeded"
    assert sorted(schema_problems(body)) == [
        "body.properties.properties.madeUp is not in VirtualMachineSchemaProperties",
        "body.properties.provisioningState is read-only",
    ]


@pytest.mark.parametrize(("status", "header", "wait"), [(429, "Retry-After", 7), (503, "Retry-After", 3)])
def test_throttling_and_outages_are_retried_honouring_retry_after(
    arm: ArmEndpoint, client: ComputeClient, transport: RecordingTransport, status: int, header: str, wait: int
) -> None:
    busy = Reply(status, {"error": {"code": "TooBusy", "message": "slow down"}}, {header: str(wait)})
    arm.fake.script("GET", REF.path, GONE)
    arm.fake.script("PUT", REF.path, busy, Reply(201, compute("Succeeded")))
    client.attach(REF, ATTACHMENT, Deadline(60))
    assert [r.method for r in arm.fake.requests] == ["GET", "PUT", "PUT"]
    assert transport.slept == [wait]


def test_a_client_error_fails_at_once_with_the_services_message(arm: ArmEndpoint, client: ComputeClient) -> None:
    arm.fake.script("GET", REF.path, GONE)
    arm.fake.script(
        "PUT",
        REF.path,
        Reply(400, {"error": {"code": "UserError", "message": "Attaching by address is not supported"}}),
    )
    with pytest.raises(ComputeApiError) as caught:
        client.attach(REF, ATTACHMENT, minute())
    assert caught.value.status == 400
    assert "UserError: Attaching by address is not supported" in str(caught.value)
    assert [r.method for r in arm.fake.requests] == ["GET", "PUT"]


def test_a_provisioning_failure_reports_the_services_errors(arm: ArmEndpoint, client: ComputeClient) -> None:
    failed = compute(
        "Failed", provisioningErrors=[{"error": {"code": "BadSsh", "message": "cannot log in as azureuser"}}]
    )
    arm.fake.script("PUT", REF.path, Reply(201, compute("Creating")))
    arm.fake.script("GET", REF.path, GONE, Reply(200, failed))
    arm.fake.script("DELETE", REF.path, Reply(200))
    with pytest.raises(ComputeApiError) as caught:
        client.attach(REF, ATTACHMENT, minute())
    assert "BadSsh: cannot log in as azureuser" in str(caught.value)
    assert "detached again" in str(caught.value)
    assert caught.value.code == "ProvisioningFailed"
    # A Failed compute left behind would block the next attach under this name.
    assert [r.method for r in arm.fake.requests] == ["GET", "PUT", "GET", "DELETE"]
    assert arm.fake.requests[-1].query["underlyingResourceAction"] == ["Detach"]


def test_detach_asks_to_detach_never_to_delete(arm: ArmEndpoint, client: ComputeClient) -> None:
    arm.fake.script("DELETE", REF.path, Reply(202))
    arm.fake.script("GET", REF.path, Reply(200, compute("Deleting")), Reply(404, {"error": {"code": "NotFound"}}))
    client.detach(REF, minute())
    delete = arm.fake.requests[0]
    assert delete.method == "DELETE"
    assert delete.query == {"api-version": [API_VERSION], "underlyingResourceAction": ["Detach"]}
    assert [r.method for r in arm.fake.requests] == ["DELETE", "GET", "GET"]


def test_detaching_a_compute_that_is_gone_is_success(arm: ArmEndpoint, client: ComputeClient) -> None:
    arm.fake.script("DELETE", REF.path, GONE)
    client.detach(REF, minute())
    assert len(arm.fake.requests) == 1


def test_get_of_a_missing_compute_is_none(arm: ArmEndpoint, client: ComputeClient) -> None:
    arm.fake.script("GET", REF.path, GONE)
    assert client.get(REF, minute()) is None
