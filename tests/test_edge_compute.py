"""The attach dynamic provider: check, diff, create/read/delete end to end against a real sshd and
a local HTTPS Resource Manager, and what Pulumi stores of it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

from components.azureml_computes import API_VERSION, ComputeRef
from components.edge_compute import REPLACE_ON, EdgeComputeProvider, _key_digest
from components.ssh_preflight import PreflightError
from tests.harness import services
from tests.harness.arm_server import TEST_TOKEN, ArmEndpoint, Reply, StaticCredential, serve_arm
from tests.harness.keys import rsa_key
from tests.harness.pulumi_mocks import Recording

KEY = rsa_key("ssh-user")


def props(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "subscriptionId": "11111111-1111-1111-1111-111111111111",
        "resourceGroupName": "rg-ml",
        "workspaceName": "mlw-dev",
        "location": "westeurope",
        "computeName": "edge-vm",
        "address": "127.0.0.1",
        "sshPort": 22.0,  # numbers reach dynamic providers as floats
        "adminUsername": "azureuser",
        "privateKey": KEY.private_pem,
        "firstBootMarker": "/var/lib/edge-training/first-boot-done",
        "expectedHostKeyFingerprint": None,
        "deadlineSeconds": 5.0,
        "minFreeDiskGb": 0.001,
        "resourceId": None,
        "armEndpoint": "https://management.azure.com",
    }
    values.update(overrides)
    return values


# --- check -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("computeName", "1-starts-with-digit"),
        ("computeName", "much-too-long-compute-name"),
        ("address", "not a host!"),
        ("sshPort", 70000.0),
        ("sshPort", 22.5),
        ("adminUsername", "Bad User"),
        ("privateKey", ""),
        ("privateKey", "-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----\n"),
        ("privateKey", __import__("tests.harness.keys", fromlist=["x"]).ed25519_key().private_openssh),
        ("workspaceName", ""),
    ],
)
def test_check_names_the_bad_property(prop: str, value: Any) -> None:
    result = EdgeComputeProvider().check({}, props(**{prop: value}))
    assert [f.property for f in result.failures] == [prop], [f.reason for f in result.failures]


def test_check_accepts_good_inputs_and_values_unknown_at_preview() -> None:
    assert EdgeComputeProvider().check({}, props()).failures == []
    assert EdgeComputeProvider().check({}, props(address=rpc.UNKNOWN, privateKey=rpc.UNKNOWN)).failures == []
    assert EdgeComputeProvider().check({}, props(address="edge-vm.contoso.local")).failures == []


# --- diff --------------------------------------------------------------------------------------


def state(**overrides: Any) -> dict[str, Any]:
    """What create leaves in the state: inputs without the key, plus the outputs."""
    p = props(**overrides)
    outs = {k: v for k, v in p.items() if k != "privateKey"}
    outs.update(
        computeId="/x",
        hostKeyFingerprint="SHA256:" + "B" * 43,
        provisioningState="Succeeded",
        privateKeySha256=_key_digest(p["privateKey"]),
    )
    return outs


def test_identical_inputs_are_no_change() -> None:
    diff = EdgeComputeProvider().diff("id", state(), props())
    assert diff.changes is False
    assert diff.replaces == []


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("workspaceName", "mlw-other"),
        ("subscriptionId", "22222222-2222-2222-2222-222222222222"),
        ("resourceGroupName", "rg-other"),
        ("computeName", "edge-vm-2"),
        ("address", "192.0.2.99"),
        ("sshPort", 2222.0),
        ("adminUsername", "otheradmin"),
        ("privateKey", rsa_key("rotated").private_pem),
        ("resourceId", "/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/virtualMachines/z"),
    ],
)
def test_changes_to_what_identifies_the_attachment_replace_it_deleting_first(prop: str, value: Any) -> None:
    diff = EdgeComputeProvider().diff("id", state(), props(**{prop: value}))
    assert diff.changes is True
    assert diff.replaces == [prop]
    assert diff.delete_before_replace is True


def test_preflight_settings_change_without_replacement() -> None:
    diff = EdgeComputeProvider().diff("id", state(), props(deadlineSeconds=60.0, minFreeDiskGb=5.0))
    assert diff.changes is True
    assert diff.replaces == []


def test_every_identifying_property_is_covered() -> None:
    assert set(REPLACE_ON) >= {"workspaceName", "computeName", "address", "sshPort", "adminUsername", "privateKey"}


# --- end to end: real sshd, local HTTPS Resource Manager ---------------------------------------


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArmEndpoint]:
    """The real provider's own client, pointed at the local endpoint: trust its certificate and
    hand out a test token instead of DefaultAzureCredential's."""
    with serve_arm(tmp_path) as endpoint:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(endpoint.ca_file))
        monkeypatch.setattr("azure.identity.DefaultAzureCredential", StaticCredential)
        yield endpoint


@pytest.fixture
def vm(ssh_server: services.SshServer, tmp_path: Path) -> dict[str, Any]:
    marker = tmp_path / "first-boot-done"
    marker.write_text("done\n")
    services.write_shim(ssh_server.directory / "shims", "docker", "echo 27.5.1\n")
    return {
        "address": services.LOOPBACK,
        "sshPort": float(ssh_server.port),
        "adminUsername": ssh_server.user,
        "firstBootMarker": str(marker),
    }


def compute_path(p: dict[str, Any]) -> str:
    return ComputeRef(p["subscriptionId"], p["resourceGroupName"], p["workspaceName"], p["computeName"]).path


def succeeded(p: dict[str, Any]) -> dict[str, Any]:
    return {"id": compute_path(p), "properties": {"computeType": "VirtualMachine", "provisioningState": "Succeeded"}}


def test_create_preflights_attaches_and_records_the_host_key(arm, vm, ssh_server) -> None:
    p = props(**vm, armEndpoint=arm.url)
    arm.fake.script("PUT", compute_path(p), Reply(201, succeeded(p)))
    provider = EdgeComputeProvider()
    result = provider.create(p)
    assert result.id == compute_path(p)
    assert result.outs["hostKeyFingerprint"] == ssh_server.host_key_fingerprint
    assert result.outs["provisioningState"] == "Succeeded"
    assert "privateKey" not in result.outs
    (put,) = arm.fake.requests
    assert put.query == {"api-version": [API_VERSION]}
    assert put.body["properties"]["properties"]["address"] == services.LOOPBACK
    assert put.body["properties"]["properties"]["sshPort"] == ssh_server.port

    # What Pulumi pickles into the state holds no key, token or client, even after an operation.
    pickled = base64.b64decode(serialize_provider(provider))
    for secret in (KEY.private_pem.splitlines()[1], TEST_TOKEN, "PRIVATE KEY", "Bearer"):
        assert secret.encode() not in pickled, secret


def test_an_openssh_format_key_is_sent_to_azure_ml_as_pem(arm, vm) -> None:
    p = props(**vm, armEndpoint=arm.url, privateKey=KEY.private_openssh)
    arm.fake.script("PUT", compute_path(p), Reply(201, succeeded(p)))
    EdgeComputeProvider().create(p)
    sent = arm.fake.requests[0].body["properties"]["properties"]["administratorAccount"]["privateKeyData"]
    assert sent.startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_a_failed_preflight_sends_nothing_to_azure(arm, vm) -> None:
    p = props(**vm, armEndpoint=arm.url, expectedHostKeyFingerprint="SHA256:" + "C" * 43)
    with pytest.raises(PreflightError):
        EdgeComputeProvider().create(p)
    assert arm.fake.requests == []


def test_a_failed_provisioning_is_cleaned_up_and_reported(arm, vm) -> None:
    p = props(**vm, armEndpoint=arm.url)
    failed = {
        "properties": {
            "provisioningState": "Failed",
            "provisioningErrors": [{"error": {"code": "SshFailed", "message": "auth failed"}}],
        }
    }
    arm.fake.script("PUT", compute_path(p), Reply(201, failed))
    arm.fake.script("DELETE", compute_path(p), Reply(200))
    with pytest.raises(Exception, match="SshFailed: auth failed"):
        EdgeComputeProvider().create(p)
    assert [r.method for r in arm.fake.requests] == ["PUT", "DELETE"]
    assert arm.fake.requests[1].query["underlyingResourceAction"] == ["Detach"]


def test_read_sees_a_compute_detached_by_hand(arm) -> None:
    p = state(armEndpoint=arm.url)
    arm.fake.script("GET", compute_path(p), Reply(404, {"error": {"code": "NotFound"}}))
    result = EdgeComputeProvider().read("id", p)
    assert result.id is None


def test_read_verifies_the_recorded_host_key(arm, vm, ssh_server) -> None:
    good = state(**vm, armEndpoint=arm.url) | {"hostKeyFingerprint": ssh_server.host_key_fingerprint}
    arm.fake.script("GET", compute_path(good), Reply(200, succeeded(good)))
    assert EdgeComputeProvider().read("id", good).outs["provisioningState"] == "Succeeded"
    with pytest.raises(PreflightError) as caught:
        EdgeComputeProvider().read("id", good | {"hostKeyFingerprint": "SHA256:" + "D" * 43})
    assert caught.value.check == "host-key"


def test_delete_detaches_and_tolerates_a_compute_already_gone(arm) -> None:
    p = state(armEndpoint=arm.url)
    arm.fake.script("DELETE", compute_path(p), Reply(404, {"error": {"code": "NotFound"}}))
    EdgeComputeProvider().delete("id", p)
    (request,) = arm.fake.requests
    assert request.method == "DELETE"
    assert request.query["underlyingResourceAction"] == ["Detach"]


# --- in the program ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording() -> Recording:
    from tests.conftest import DEV_SECRET_KEYS, dev_stack_config
    from tests.harness import pulumi_mocks

    # The attach exists in the virtual-machine mode (the Kubernetes mode: test_edge_kubernetes.py).
    config = dev_stack_config() | {"edgeComputeMode": "virtual-machine"}
    return pulumi_mocks.run_program(config, secret_keys=DEV_SECRET_KEYS)


def test_the_program_attaches_the_hub_vm_to_the_workspace(recording: Recording) -> None:
    (compute,) = [r for r in recording.resources if r.type == "pulumi-python:dynamic/edge-training:EdgeCompute"]
    exports = {k: v.value for k, v in recording.exports.items()}
    assert compute.inputs["address"] == exports["hubVmPublicIp"]
    assert compute.inputs["workspaceName"] == exports["workspaceName"]
    assert compute.inputs["resourceGroupName"] == exports["resourceGroupName"]
    assert compute.inputs["adminUsername"] == "azureuser"
    assert compute.inputs["firstBootMarker"] == "/var/lib/edge-training/first-boot-done"
    assert {"privateKey", "__provider"} <= compute.secret_inputs
    assert compute.delete_before_replace is True
    # depends_on a component reaches its children: the VM itself and the workspace's role grants.
    for needed in ("hub-vm-vm", "cloud-mlw", "cloud-registry-b24988ac"):
        assert next(r for r in recording.resources if r.name == needed).urn in compute.dependencies, needed
    assert exports["computeName"] == "edge-vm"
