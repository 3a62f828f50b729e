"""The edge side under mocks: every Hub resource a HubArmResource at its profile's API version,
bodies (exactly as the provider sends them) checked against Microsoft's own models of those
versions, secrets kept secret, SSH exposure and password authentication."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from azure.mgmt.compute.v2020_06_01 import models as compute_models
from azure.mgmt.network.v2018_11_01 import models as network_models
from azure.mgmt.storage.v2019_06_01 import models as storage_models

from edge import first_boot
from providers.hub_arm_resource import body_of
from tests.conftest import recorded_stack
from tests.harness.arm_models import check_body
from tests.harness.pulumi_mocks import FAKE_PUBLIC_IP, Recording

HUB_ARM = "pulumi-python:dynamic/edge-training:HubArmResource"

# Per Hub resource type: its API version in profile 2020-09-01-hybrid, and Microsoft's model of
# the request body at that version.
HUB_TYPES: dict[tuple[str, str], tuple[str, type]] = {
    ("Microsoft.Storage", "storageAccounts"): ("2019-06-01", storage_models.StorageAccountCreateParameters),
    ("Microsoft.Network", "networkSecurityGroups"): ("2018-11-01", network_models.NetworkSecurityGroup),
    ("Microsoft.Network", "virtualNetworks"): ("2018-11-01", network_models.VirtualNetwork),
    ("Microsoft.Network", "publicIPAddresses"): ("2018-11-01", network_models.PublicIPAddress),
    ("Microsoft.Network", "networkInterfaces"): ("2018-11-01", network_models.NetworkInterface),
    ("Microsoft.Compute", "virtualMachines"): ("2020-06-01", compute_models.VirtualMachine),
    ("Microsoft.Compute", "extensions"): ("2020-06-01", compute_models.VirtualMachineExtension),
}


@pytest.fixture(scope="module", params=["cloud-init", "custom-script"])
def recording(request: pytest.FixtureRequest) -> Recording:
    from tests.conftest import DEV_SECRET_KEYS, dev_stack_config
    from tests.harness import pulumi_mocks

    # The virtual-machine mode with its default size: the Hub side exactly as before the Kubernetes
    # mode (test_edge_kubernetes.py covers that mode's VM, NSG and scripts).
    overrides = {"hubBootstrap": request.param, "edgeComputeMode": "virtual-machine"}
    config = {k: v for k, v in (dev_stack_config() | overrides).items() if k != "hubVmSize"}
    return pulumi_mocks.run_program(config, secret_keys=DEV_SECRET_KEYS)


def hub_resources(recording: Recording) -> list[Any]:
    return recording.of_type(HUB_ARM)


def by_type(recording: Recording, resource_type: str) -> Any:
    found = [r for r in hub_resources(recording) if r.inputs["resourceType"] == resource_type]
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def body(resource: Any) -> dict[str, Any]:
    """The body the provider PUTs for this resource (plain and secret properties together)."""
    return body_of(resource.inputs)


def hub_components(recording: Recording) -> list[Any]:
    return [r for r in recording.resources if r.type.startswith("edge-training:edge:Hub")]


def test_every_hub_resource_is_a_hub_arm_resource_at_its_profile_api_version(recording: Recording) -> None:
    declared = set()
    for resource in hub_resources(recording):
        key = (resource.inputs["resourceProviderNamespace"], resource.inputs["resourceType"])
        assert key in HUB_TYPES, f"{resource.name}: {key} has no Hub API version on record"
        assert resource.inputs["apiVersion"] == HUB_TYPES[key][0], resource.name
        assert resource.provider_urn == "", resource.name  # the dynamic provider, nothing of azure-native
        assert resource.delete_before_replace, resource.name  # ARM names are identities
        declared.add(key)
    expected = set(HUB_TYPES)
    if recording.one("edge-training:edge:HubVm") and not any(
        r.name.endswith("first-boot") for r in hub_resources(recording)
    ):
        expected.discard(("Microsoft.Compute", "extensions"))
    assert declared == expected
    # And no Hub resource slipped through an azure-native class (which would send a newer version).
    children = {r.type for c in hub_components(recording) for r in recording.children_of(c)}
    # (The blob container is the one Hub resource made through the data plane, not Resource Manager.)
    assert children == {HUB_ARM, "pulumi-python:dynamic/edge-training:HubBlobContainer"}
    assert not [r for r in recording.of_type("pulumi:providers:azure-native") if r.name != "azure"]


def test_every_hub_body_is_valid_for_microsofts_model_of_its_api_version(recording: Recording) -> None:
    for resource in hub_resources(recording):
        key = (resource.inputs["resourceProviderNamespace"], resource.inputs["resourceType"])
        assert check_body(HUB_TYPES[key][1], body(resource)) == [], resource.name


@pytest.mark.parametrize(
    ("model_type", "bad_body", "problem"),
    [
        # a property newer API versions have and 2018-11-01 does not
        (network_models.PublicIPAddress, {"location": "l", "properties": {"natGateway": {"id": "x"}}}, "round trip"),
        # required fields missing
        (compute_models.VirtualMachineExtension, {"properties": {"publisher": "p"}}, "location is required"),
        (storage_models.StorageAccountCreateParameters, {"location": "l", "kind": "Storage"}, "sku"),
        # a read-only field sent
        (compute_models.VirtualMachine, {"location": "l", "properties": {"vmId": "x"}}, "read-only"),
    ],
    ids=["unknown-field", "required-compute", "required-storage", "readonly"],
)
def test_the_model_check_catches_what_the_api_version_refuses(model_type, bad_body, problem) -> None:
    problems = check_body(model_type, bad_body)
    assert any(problem in p for p in problems), problems


def test_every_hub_resource_targets_the_hubs_resource_manager(recording: Recording) -> None:
    for resource in hub_resources(recording):
        assert resource.inputs["armEndpoint"] == "https://management.local.azurestack.external", resource.name
        assert resource.inputs["subscriptionId"] == "00000000-0000-0000-0000-000000000001", resource.name
        assert resource.inputs["tenantId"] == "00000000-0000-0000-0000-000000000002", resource.name
        assert resource.inputs["identityProvider"] == "azuread", resource.name
        assert resource.inputs["resourceGroupName"] == "rg-edge-training", resource.name


def test_adfs_hubs_sign_in_at_adfs_without_a_tenant() -> None:
    recording = recorded_stack({"hubIdentityProvider": "adfs", "hubTenantId": None})
    for resource in hub_resources(recording):
        assert resource.inputs["identityProvider"] == "adfs", resource.name
        assert resource.inputs.get("tenantId") is None, resource.name


def test_no_hub_credential_reaches_the_state(run_stack, monkeypatch) -> None:
    """The provider reads HUB_ARM_* when it talks to the Hub; the program never passes them on."""
    monkeypatch.setenv("HUB_ARM_CLIENT_ID", "hub-app")
    monkeypatch.setenv("HUB_ARM_CLIENT_SECRET", "hub-secret-value")
    monkeypatch.setenv("ARM_CLIENT_SECRET", "cloud-secret-value")
    recording = run_stack()
    for resource in recording.resources:
        recorded = json.dumps(resource.inputs)
        assert "hub-secret-value" not in recorded and "hub-app" not in recorded, resource.name
        assert "cloud-secret-value" not in recorded, resource.name


def test_custom_data_and_protected_settings_stay_secret(recording: Recording) -> None:
    vm = by_type(recording, "virtualMachines")
    secret_paths = {"virtualMachines": ("osProfile", "customData"), "extensions": ("protectedSettings",)}
    found = 0
    for resource in hub_resources(recording):
        path = secret_paths.get(resource.inputs["resourceType"])
        if path is None:
            continue
        sent = body(resource)["properties"]
        for key in path:
            sent = sent.get(key) if isinstance(sent, dict) else None
        if sent is None:
            continue
        found += 1
        plain = resource.inputs["properties"]
        for key in path[:-1]:
            plain = plain[key]
        assert path[-1] not in plain, resource.name  # not in the plain properties
        assert "secretProperties" in resource.secret_inputs, resource.name
        assert "secretProperties" in resource.additional_secret_outputs, resource.name
    assert found == 1  # custom data with cloud-init, protected settings with the extension
    assert vm.inputs["properties"]["osProfile"]["adminUsername"] == "azureuser"  # the rest stays readable


def test_storage_is_https_only_and_the_container_private(recording: Recording) -> None:
    account = by_type(recording, "storageAccounts")
    assert account.inputs["properties"]["supportsHttpsTrafficOnly"] is True
    assert account.inputs["sku"] == {"name": "Standard_LRS"}
    # The container goes through the blob service, never Resource Manager (no ARM path on a Hub).
    assert not [r for r in hub_resources(recording) if "containers" in str(r.inputs["resourceType"])]
    [container] = recording.of_type("pulumi-python:dynamic/edge-training:HubBlobContainer")
    assert container.inputs["containerName"] == "training-data"  # Pulumi.yaml's default
    assert container.inputs["accountName"] == account.inputs["resourceName"]
    # Name and endpoint come from the account's outputs: replacing the account replaces the container.
    assert account.urn in container.property_dependencies["accountName"]
    assert account.urn in container.property_dependencies["blobEndpoint"]
    assert not {"accountKey", "key"} & set(container.inputs)  # the key is fetched per call, never an input


def _inbound_ssh_sources(recording: Recording) -> list[str]:
    rules = by_type(recording, "networkSecurityGroups").inputs["properties"]["securityRules"]
    sources: list[str] = []
    for rule in rules:
        p = rule["properties"]
        if p["direction"] == "Inbound" and p["access"] == "Allow":
            assert p["destinationPortRange"] == "22"
            sources += p.get("sourceAddressPrefixes") or [p["sourceAddressPrefix"]]
    return sources


def test_ssh_is_open_only_to_the_configured_sources(recording: Recording) -> None:
    assert _inbound_ssh_sources(recording) == ["203.0.113.0/24"]
    several = recorded_stack({"hubSshSourceCidrs": ["203.0.113.0/24", "198.51.100.7/32"]})
    assert _inbound_ssh_sources(several) == ["203.0.113.0/24", "198.51.100.7/32"]


def test_ssh_from_everywhere_needs_the_opt_out_and_changes_only_the_rule() -> None:
    opened = recorded_stack({"hubSshSourceCidrs": ["*"], "hubAllowSshFromAnywhere": True})
    assert _inbound_ssh_sources(opened) == ["*"]


def test_the_subnet_carries_the_nsg_and_the_nic_the_static_public_ip(recording: Recording) -> None:
    vnet = by_type(recording, "virtualNetworks").inputs["properties"]
    nsg = by_type(recording, "networkSecurityGroups")
    assert vnet["subnets"][0]["properties"]["networkSecurityGroup"] == {"id": nsg.id}
    pip = by_type(recording, "publicIPAddresses")
    assert pip.inputs["properties"]["publicIPAllocationMethod"] == "Static"
    ip_config = by_type(recording, "networkInterfaces").inputs["properties"]["ipConfigurations"][0]["properties"]
    assert ip_config["publicIPAddress"] == {"id": pip.id}


def test_the_vm_takes_keys_only(recording: Recording) -> None:
    vm = by_type(recording, "virtualMachines").inputs["properties"]
    linux = vm["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"][0]["path"] == "/home/azureuser/.ssh/authorized_keys"
    assert linux["ssh"]["publicKeys"][0]["keyData"].startswith("ssh-rsa ")
    assert "password" not in json.dumps({k: v.value for k, v in recording.exports.items()}).lower()
    for resource in hub_resources(recording):
        assert "adminpassword" not in json.dumps(resource.inputs).lower(), resource.name


def test_the_vm_uses_the_configured_gen1_image_size_and_disk(recording: Recording) -> None:
    vm = by_type(recording, "virtualMachines").inputs["properties"]
    assert vm["hardwareProfile"] == {"vmSize": "Standard_DS2_v2"}
    assert vm["storageProfile"]["imageReference"] == {
        "publisher": "Canonical",
        "offer": "0001-com-ubuntu-server-jammy",
        "sku": "22_04-lts",
        "version": "latest",
    }
    assert vm["storageProfile"]["osDisk"]["managedDisk"] == {"storageAccountType": "Premium_LRS"}
    assert vm["storageProfile"]["osDisk"]["diskSizeGB"] == 64
    assert "diagnosticsProfile" not in vm


def test_no_linux_diagnostics_extension(recording: Recording) -> None:
    for resource in hub_resources(recording):
        assert "Diagnostic" not in json.dumps(resource.inputs.get("properties", {})), resource.name


def deployed_script(recording: Recording) -> str:
    """The first-boot script exactly as this recording would deliver it to the VM."""
    vm = body(by_type(recording, "virtualMachines"))["properties"]
    if "customData" in vm["osProfile"]:
        cloud_config = base64.b64decode(vm["osProfile"]["customData"]).decode()
        assert cloud_config.startswith("#cloud-config\n")
        document = yaml.safe_load(cloud_config)
        (file,) = document["write_files"]
        assert file["path"] == first_boot.SCRIPT_PATH_ON_VM and file["permissions"] == "0755"
        assert document["runcmd"] == [["bash", first_boot.SCRIPT_PATH_ON_VM]]
        assert not any(r.inputs["resourceType"] == "extensions" for r in hub_resources(recording))
        return base64.b64decode(file["content"]).decode()
    extension = by_type(recording, "extensions")
    properties = body(extension)["properties"]
    assert properties["publisher"] == "Microsoft.Azure.Extensions"
    assert properties["type"] == "CustomScript"
    # 2.0: what Hubs syndicate.
    assert properties["typeHandlerVersion"] == "2.0"
    vm = by_type(recording, "virtualMachines")
    assert extension.inputs["parentResourcePath"] == f"virtualMachines/{vm.inputs['resourceName']}"
    assert vm.urn in extension.property_dependencies["parentResourcePath"]  # replaced with its VM
    return base64.b64decode(properties["protectedSettings"]["script"]).decode()


def test_both_bootstraps_deliver_the_same_script(recording: Recording) -> None:
    assert deployed_script(recording) == first_boot.render_script("azureuser", "27.5.1")


def test_hub_outputs_are_exported(recording: Recording) -> None:
    exports = {k: v.value for k, v in recording.exports.items()}
    assert exports["hubVmPublicIp"] == FAKE_PUBLIC_IP
    assert exports["hubVmAdminUsername"] == "azureuser"
    assert exports["hubDataContainer"] == "training-data"
    assert exports["hubBlobEndpoint"] == f"https://{exports['hubStorageAccountName']}.blob.local.azurestack.external/"
    assert exports["hubResourceGroupName"] == "rg-edge-training"
    for key in ("hubStorageAccountId", "hubVmId"):
        assert exports[key], key


DECLARE_PROGRAM = """
import pulumi
from components.hub_resource import HubEndpoint, HubResourceSpec, declare

hub = HubEndpoint("https://management.hub.example", "sub", "adfs", None)
secret = pulumi.Output.secret("I2Nsb3VkLWNvbmZpZwo=")
shapes = {
    "leaf": {"osProfile": {"adminUsername": "u", "customData": secret}},
    "branch": {"osProfile": secret.apply(lambda c: {"adminUsername": "u", "customData": c})},
    "whole": secret.apply(lambda c: {"osProfile": {"adminUsername": "u", "customData": c}}),
}
for name, properties in shapes.items():
    declare(
        name,
        HubResourceSpec(
            namespace="Microsoft.Compute", resource_type="virtualMachines", name=name,
            resource_group_name="rg", properties=properties, hub=hub, location="local",
        ),
        pulumi.ResourceOptions(),
    )
"""


def test_custom_data_stays_secret_whatever_shape_the_properties_take(tmp_path) -> None:
    """A component may build the body from secrets in several ways: the custom data alone an
    Output, a branch of the body, or the whole body. It never ends up in plain state."""
    from tests.harness import pulumi_mocks

    main = tmp_path / "__main__.py"
    main.write_text(DECLARE_PROGRAM)
    recording = pulumi_mocks.run_program({}, main=main)
    found = {r.name: r for r in recording.of_type(HUB_ARM)}
    leaf = found["leaf"]
    assert "customData" not in leaf.inputs["properties"]["osProfile"]  # split out ...
    assert "secretProperties" in leaf.secret_inputs and "properties" not in leaf.secret_inputs  # ... precisely
    for name in ("branch", "whole"):  # cannot be split: the whole body is kept secret
        assert "properties" in found[name].secret_inputs, name
        assert "properties" in found[name].additional_secret_outputs, name
