"""The attach dynamic provider: check, diff, create/read/delete end to end against a real sshd and
a local HTTPS Resource Manager, and what Pulumi stores of it."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

from clients.cloud import CloudDiscoveryError
from clients.credentials import CredentialConfigError
from components.azureml_computes import API_VERSION, ComputeApiError, ComputeRef
from components.edge_compute import REPLACE_ON, EdgeComputeProvider, _key_digest
from components.ssh_preflight import PreflightError
from tests.harness import services
from tests.harness.arm_server import SOVEREIGN_AUDIENCE, TEST_TOKEN, ArmEndpoint, Recorded, Reply
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
        ("armEndpoint", "http://management.azure.com"),
        ("armEndpoint", "management.azure.com"),
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
        # An attached compute's location cannot be changed in place, nor can the Resource Manager
        # it lives in: both mean a new attachment.
        ("location", "northeurope"),
        ("armEndpoint", "https://management.usgovcloudapi.net"),
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


def test_exactly_the_identifying_properties_replace() -> None:
    """Written out, not derived from REPLACE_ON: dropping one from it must fail here (a test
    parametrized from the tuple itself would lose the case with the property)."""
    assert sorted(REPLACE_ON) == sorted(
        [
            "subscriptionId",
            "resourceGroupName",
            "workspaceName",
            "location",
            "computeName",
            "address",
            "sshPort",
            "adminUsername",
            "privateKey",
            "resourceId",
            "armEndpoint",
        ]
    )


def test_a_new_owner_or_expected_key_is_an_update_not_a_replacement() -> None:
    diff = EdgeComputeProvider().diff("id", state(), props(owner="org/other", expectedHostKeyFingerprint="SHA256:x"))
    assert diff.changes is True
    assert diff.replaces == []


# --- end to end: real sshd, local HTTPS Resource Manager ---------------------------------------


@pytest.fixture
def arm(sovereign_arm: ArmEndpoint) -> ArmEndpoint:
    """The real provider's own clients, signing in as the deploy workflow does (tests/conftest.py)."""
    return sovereign_arm


def compute_requests(arm: ArmEndpoint) -> list[Recorded]:
    """The requests to the compute API (not the metadata or the sign-in)."""
    return [r for r in arm.fake.requests if "/computes/" in r.path]


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
    get, put = compute_requests(arm)
    # GET before the PUT: the PUT would overwrite a compute of that name.
    assert (get.method, put.method) == ("GET", "PUT")
    assert put.headers["authorization"] == f"Bearer {TEST_TOKEN}"
    # Signed in with the pipeline's ARM_* variables, for the audience the cloud's metadata names.
    (token,) = [r for r in arm.fake.requests if r.method == "POST"]
    assert token.body["client_id"] == os.environ["ARM_CLIENT_ID"]
    assert token.body["client_assertion"] == "github-federated-jwt"
    assert token.body["scope"] == SOVEREIGN_AUDIENCE + ".default"
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
    sent = compute_requests(arm)[1].body["properties"]["properties"]["administratorAccount"]["privateKeyData"]
    assert sent.startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_a_failed_preflight_sends_nothing_to_azure(arm, vm) -> None:
    p = props(**vm, armEndpoint=arm.url, expectedHostKeyFingerprint="SHA256:" + "C" * 43)
    with pytest.raises(PreflightError):
        EdgeComputeProvider().create(p)
    assert compute_requests(arm) == []  # only the cloud's metadata was read


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("unset", "said"), [("ARM_TENANT_ID", "ARM_TENANT_ID"), ("armEndpoint", "is not an https URL")]
)
def test_bad_sign_in_settings_fail_before_waiting_for_the_vm(
    arm, monkeypatch: pytest.MonkeyPatch, unset: str, said: str
) -> None:
    """The VM address is a closed port with 900 s to wait: sign-in problems must not wait it out."""
    with socket.socket() as sock:
        sock.bind((services.LOOPBACK, 0))
        closed = float(sock.getsockname()[1])
    p = props(armEndpoint=arm.url, address=services.LOOPBACK, sshPort=closed, deadlineSeconds=900.0)
    if unset == "armEndpoint":
        p["armEndpoint"] = arm.url.replace("https://", "http://")
    else:
        monkeypatch.delenv(unset)
    with pytest.raises((CredentialConfigError, CloudDiscoveryError), match=said):
        EdgeComputeProvider().create(p)
    assert compute_requests(arm) == []


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
    with pytest.raises(ComputeApiError, match="SshFailed: auth failed"):
        EdgeComputeProvider().create(p)
    requests = compute_requests(arm)
    assert [r.method for r in requests] == ["GET", "PUT", "DELETE"]
    assert requests[-1].query["underlyingResourceAction"] == ["Detach"]


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


# --- update: a newly expected host key is checked against the VM ----------------------------------


@pytest.fixture
def two_key_vm(start_ssh_server, ssh_user_key, tmp_path: Path) -> services.SshServer:
    """sshd offering an ed25519 and an RSA host key; clients negotiate ed25519 first."""
    return start_ssh_server([ssh_user_key], name="two-keys", host_key_types=("ed25519", "rsa"))


def updated(server: services.SshServer, expected: str) -> tuple[dict[str, Any], dict[str, Any]]:
    where = {"address": services.LOOPBACK, "sshPort": float(server.port)}
    olds = state(**where) | {"hostKeyFingerprint": server.host_key_fingerprints["ed25519"]}
    return olds, props(**where, expectedHostKeyFingerprint=expected)


def test_update_records_a_newly_expected_key_only_if_the_vm_offers_it(two_key_vm) -> None:
    rsa_fingerprint = two_key_vm.host_key_fingerprints["rsa"]
    result = EdgeComputeProvider().update("id", *updated(two_key_vm, rsa_fingerprint))
    assert result.outs["hostKeyFingerprint"] == rsa_fingerprint
    # Outputs are stored in the state in plain text: never the key, in any field.
    assert "privateKey" not in result.outs
    assert not any(KEY.private_pem.splitlines()[1] in str(v) for v in result.outs.values())


def test_update_refuses_a_newly_expected_key_the_vm_does_not_offer(two_key_vm) -> None:
    wrong = "SHA256:" + "E" * 43
    with pytest.raises(PreflightError) as caught:
        EdgeComputeProvider().update("id", *updated(two_key_vm, wrong))
    assert caught.value.check == "host-key"
    message = str(caught.value)
    assert wrong in message and two_key_vm.host_key_fingerprints["rsa"] in message


def test_update_refuses_a_new_key_when_the_vm_cannot_be_asked(two_key_vm) -> None:
    olds, news = updated(two_key_vm, two_key_vm.host_key_fingerprints["rsa"])
    two_key_vm.stop()
    with pytest.raises(PreflightError, match="cannot check the new sshHostKeyFingerprint"):
        EdgeComputeProvider().update("id", olds, news)


def test_delete_detaches_and_tolerates_a_compute_already_gone(arm) -> None:
    p = state(armEndpoint=arm.url)
    arm.fake.script("DELETE", compute_path(p), Reply(404, {"error": {"code": "NotFound"}}))
    EdgeComputeProvider().delete("id", p)
    (request,) = compute_requests(arm)
    assert request.method == "DELETE"
    assert request.query["underlyingResourceAction"] == ["Detach"]


# --- in the program ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording() -> Recording:
    from tests.conftest import recorded_stack

    # The attach exists in the virtual-machine mode (the Kubernetes mode: test_edge_kubernetes.py).
    return recorded_stack({"edgeComputeMode": "virtual-machine"})


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
