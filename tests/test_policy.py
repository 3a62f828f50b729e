"""The CrossGuard policy pack: each policy with a compliant and a violating resource, through
pulumi-policy's own argument types, and the real program checked against the whole pack."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import EnforcementLevel, PolicyResourceOptions, ResourceValidationArgs, Secret

from policy.baseline import POLICIES
from tests.harness import pulumi_mocks

BY_NAME = {p.name: p for p in POLICIES}


def violations(policy: str, resource_type: str, props: dict[str, Any]) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource_type,
        props=props,
        urn=f"urn:pulumi:dev::edge-training::{resource_type}::r",
        name="r",
        opts=PolicyResourceOptions(False, [], None, [], None, []),  # type: ignore[arg-type]
        provider=None,
    )
    BY_NAME[policy].validate(args, lambda message, urn=None: found.append(message))
    return found


def nsg_rule(source: str = "203.0.113.0/24", port: str = "22", access: str = "Allow") -> dict[str, Any]:
    return {
        "access": access,
        "direction": "Inbound",
        "protocol": "Tcp",
        "sourceAddressPrefix": source,
        "destinationPortRange": port,
        "sourcePortRange": "*",
        "destinationAddressPrefix": "*",
        "priority": 100,
    }


def generic(namespace: str, kind: str, properties: dict[str, Any], version: str = "") -> dict[str, Any]:
    versions = {"Microsoft.Storage": "2019-06-01", "Microsoft.Network": "2018-11-01", "Microsoft.Compute": "2020-06-01"}
    return {
        "resourceProviderNamespace": namespace,
        "resourceType": kind,
        "apiVersion": version or versions[namespace],
        "properties": properties,
    }


CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    # (policy, type, compliant props, violating props)
    (
        "no-ssh-from-everywhere",
        "azure-native:network:NetworkSecurityGroup",
        {"securityRules": [nsg_rule(), nsg_rule("*", "443")]},
        {"securityRules": [nsg_rule("0.0.0.0/0")]},
    ),
    (
        "no-ssh-from-everywhere",
        "azure-native:network:SecurityRule",
        nsg_rule("*", "22", access="Deny"),
        nsg_rule("Internet", "20-30"),
    ),
    (
        "no-ssh-from-everywhere",
        "azure-native:resources:Resource",
        generic(
            "Microsoft.Network", "networkSecurityGroups", {"securityRules": [{"name": "ssh", "properties": nsg_rule()}]}
        ),
        generic(
            "Microsoft.Network",
            "networkSecurityGroups",
            {"securityRules": [{"name": "ssh", "properties": {**nsg_rule("*", "*")}}]},
        ),
    ),
    (
        "vm-password-authentication-disabled",
        "azure-native:compute:VirtualMachine",
        {"osProfile": {"adminUsername": "u", "linuxConfiguration": {"disablePasswordAuthentication": True}}},
        {
            "osProfile": {
                "adminUsername": "u",
                "adminPassword": Secret("p"),
                "linuxConfiguration": {"disablePasswordAuthentication": False},
            }
        },
    ),
    (
        # A VM whose first-boot data is secret (Kubernetes mode) arrives with `properties` a Secret.
        "vm-password-authentication-disabled",
        "azure-native:resources:Resource",
        generic(
            "Microsoft.Compute",
            "virtualMachines",
            Secret(
                {"osProfile": {"linuxConfiguration": {"disablePasswordAuthentication": True}, "customData": "c2VjcmV0"}}
            ),
        ),  # type: ignore[arg-type]
        generic(
            "Microsoft.Compute",
            "virtualMachines",
            Secret({"osProfile": {"linuxConfiguration": {"disablePasswordAuthentication": False}}}),
        ),  # type: ignore[arg-type]
    ),
    (
        "vm-password-authentication-disabled",
        "azure-native:resources:Resource",
        generic(
            "Microsoft.Compute",
            "virtualMachines",
            {"osProfile": {"linuxConfiguration": {"disablePasswordAuthentication": True}}},
        ),
        generic("Microsoft.Compute", "virtualMachines", {"osProfile": {"linuxConfiguration": {}}}),
    ),
    (
        "vm-password-authentication-disabled",
        "pulumi-python:dynamic/edge-training:HubArmResource",
        generic(
            "Microsoft.Compute",
            "virtualMachines",
            {"osProfile": {"linuxConfiguration": {"disablePasswordAuthentication": True}}},
        ),
        {
            **generic(
                "Microsoft.Compute",
                "virtualMachines",
                {"osProfile": {"linuxConfiguration": {"disablePasswordAuthentication": True}}},
            ),
            "secretProperties": Secret({"osProfile": {"adminPassword": "p"}}),
        },
    ),
    (
        "storage-secure",
        "azure-native:storage:StorageAccount",
        {"enableHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": False},
        {"enableHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_0", "allowBlobPublicAccess": True},
    ),
    (
        "storage-secure",
        "azure-native:resources:Resource",
        generic("Microsoft.Storage", "storageAccounts", {"supportsHttpsTrafficOnly": True}),
        generic("Microsoft.Storage", "storageAccounts", {"supportsHttpsTrafficOnly": False}),
    ),
    (
        "storage-secure",
        "azure-native:resources:Resource",
        generic("Microsoft.Storage", "containers", {"publicAccess": "None"}),
        generic("Microsoft.Storage", "containers", {"publicAccess": "Blob"}),
    ),
    (
        "registry-locked-down",
        "azure-native:containerregistry:Registry",
        {"adminUserEnabled": False, "anonymousPullEnabled": False},
        {"adminUserEnabled": True},
    ),
    (
        "key-vault-purge-protection",
        "azure-native:keyvault:Vault",
        {"properties": {"enablePurgeProtection": True}},
        {"properties": {"enableSoftDelete": True}},
    ),
    (
        "workspace-uses-our-registry",
        "azure-native:machinelearningservices:Workspace",
        {"containerRegistry": "/subscriptions/x/.../registries/cr"},
        {"storageAccount": "/x"},
    ),
    (
        "hub-api-versions",
        "azure-native:resources:Resource",
        generic("Microsoft.Compute", "virtualMachines", {}),
        generic("Microsoft.Compute", "virtualMachines", {}, version="2024-07-01"),
    ),
    (
        "hub-api-versions",
        "azure-native:resources:Resource",
        generic("Microsoft.Network", "publicIPAddresses", {}),
        {"resourceProviderNamespace": "Microsoft.ContainerService", "apiVersion": "2024-01-01"},
    ),
    (
        "hub-api-versions",
        "azure-native:resources:Resource",
        {"resourceProviderNamespace": "Microsoft.Kubernetes", "apiVersion": "2026-05-01"},
        {"resourceProviderNamespace": "Microsoft.Kubernetes", "apiVersion": "2024-02-01-preview"},
    ),
    (
        "no-plaintext-secrets",
        "pulumi:providers:azure-native",
        {"clientId": "app", "clientSecret": Secret("s")},
        {"clientId": "app", "clientSecret": "s"},
    ),
    (
        "no-plaintext-secrets",
        "azure-native:resources:Resource",
        {"properties": {"osProfile": {"adminPassword": Secret("p")}}},
        {"properties": {"osProfile": {"adminPassword": "hunter2"}}},
    ),
    (
        "public-network-access-noted",
        "azure-native:containerregistry:Registry",
        {"publicNetworkAccess": "Disabled"},
        {"publicNetworkAccess": "Enabled"},
    ),
]


@pytest.mark.parametrize(
    ("policy", "resource_type", "good", "bad"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_policy_passes_compliant_and_flags_violating(policy, resource_type, good, bad) -> None:
    assert violations(policy, resource_type, good) == []
    assert violations(policy, resource_type, bad) != []


def test_every_policy_has_a_compliant_and_a_violating_case() -> None:
    assert {c[0] for c in CASES} == set(BY_NAME)


def test_levels_are_deliberate() -> None:
    advisory = {p.name for p in POLICIES if p.enforcement_level == EnforcementLevel.ADVISORY}
    assert advisory == {"public-network-access-noted"}


def _as_policy_value(value: Any) -> Any:
    """A recorded input as the policy SDK hands it over: secrets wrapped where they are (a secret
    nested in `properties` stays nested)."""
    if pulumi_mocks.is_secret_marker(value):
        return Secret(pulumi_mocks._unwrap_secrets(value.get("value")))
    if isinstance(value, dict):
        return {k: _as_policy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_policy_value(v) for v in value]
    return value


def _recorded_as_policy_input(resource: pulumi_mocks.Resource) -> dict[str, Any]:
    return {k: _as_policy_value(v) for k, v in resource.raw_inputs.items()}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"hubBootstrap": "custom-script"}, {"edgeComputeMode": "virtual-machine"}],
    ids=["cloud-init", "custom-script", "virtual-machine"],
)
def test_the_program_passes_every_mandatory_policy(run_stack, overrides) -> None:
    recording = run_stack(overrides)
    checked = set()
    for resource in recording.resources:
        for policy in POLICIES:
            found = violations(policy.name, resource.type, _recorded_as_policy_input(resource))
            if policy.enforcement_level == EnforcementLevel.MANDATORY:
                assert found == [], f"{policy.name} on {resource.name}: {found}"
            checked.add(resource.type)
    assert {
        "pulumi-python:dynamic/edge-training:HubArmResource",
        "azure-native:containerregistry:Registry",
        "azure-native:keyvault:Vault",
        "azure-native:storage:StorageAccount",
    } <= checked


def test_the_program_with_ssh_open_to_everyone_is_stopped_by_the_pack(run_stack) -> None:
    recording = run_stack({"hubSshSourceCidrs": ["*"], "hubAllowSshFromAnywhere": True})
    found = [
        m
        for r in recording.resources
        for m in violations("no-ssh-from-everywhere", r.type, _recorded_as_policy_input(r))
    ]
    assert len(found) == 1 and "everywhere" in found[0]


def test_the_pack_and_the_program_agree_on_the_hub_api_versions() -> None:
    # The pack keeps its own copy so that it runs without the program's modules; they must agree.
    from components.hub_resource import HUB_API_VERSIONS
    from policy.baseline import HUB_API_VERSIONS as POLICY_VERSIONS

    assert dict(POLICY_VERSIONS) == dict(HUB_API_VERSIONS)


def test_the_pack_and_the_program_agree_on_the_connected_cluster_version() -> None:
    from policy.baseline import CLOUD_GENERIC_API_VERSIONS
    from providers.arc_connection import CONNECTED_CLUSTER_API_VERSION

    assert dict(CLOUD_GENERIC_API_VERSIONS) == {"Microsoft.Kubernetes": CONNECTED_CLUSTER_API_VERSION}
