"""The CrossGuard policy pack: each policy with a compliant and a violating resource, through
pulumi-policy's own argument types, and the real program checked against the whole pack."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.baseline import POLICIES
from tests.conftest import recorded_stack
from tests.harness import pulumi_mocks

BY_NAME = {p.name: p for p in POLICIES if isinstance(p, ResourceValidationPolicy)}
STACK_POLICIES = {p.name: p for p in POLICIES if isinstance(p, StackValidationPolicy)}
OPTIONS = PolicyResourceOptions(False, [], None, [], None, [])  # type: ignore[arg-type]


def violations(policy: str, resource_type: str, props: dict[str, Any]) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource_type,
        props=props,
        urn=f"urn:pulumi:dev::edge-training::{resource_type}::r",
        name="r",
        opts=OPTIONS,
        provider=None,
    )
    BY_NAME[policy].validate(args, lambda message, urn=None: found.append(message))
    return found


def stack_violations(policy: str, resources: list[tuple[str, dict[str, Any]]]) -> list[str]:
    found: list[str] = []
    args = StackValidationArgs(
        resources=[
            PolicyResource(t, props, f"urn:pulumi:dev::edge-training::{t}::r{i}", f"r{i}", OPTIONS, None, None, [], {})
            for i, (t, props) in enumerate(resources)
        ]
    )
    STACK_POLICIES[policy].validate(args, lambda message, urn=None: found.append(message))
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
    # (policy, type, compliant props, violating props); EXPECTED below says why each must fail
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


# What each violating case must be flagged for: any violation would not do, the right one must.
EXPECTED = [
    "from everywhere",
    "from everywhere",
    "from everywhere",
    "admin password",
    "disablePasswordAuthentication must be true",  # properties arriving as one secret
    "disablePasswordAuthentication must be true",
    "admin password",  # in a HubArmResource's secretProperties
    "minimumTlsVersion",
    "supportsHttpsTrafficOnly",
    "public access is Blob",
    "adminUserEnabled",
    "enablePurgeProtection",
    "containerRegistry",
    "2024-07-01",
    "not in Azure Stack Hub profile",
    "the stable version declared is 2026-05-01",
    "clientSecret holds a secret",
    "properties.osProfile.adminPassword",
    "reachable from the internet",
]


@pytest.mark.parametrize(
    ("policy", "resource_type", "good", "bad", "expected"),
    [(*c, e) for c, e in zip(CASES, EXPECTED, strict=True)],
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_each_policy_passes_compliant_and_flags_violating(policy, resource_type, good, bad, expected) -> None:
    assert violations(policy, resource_type, good) == []
    found = violations(policy, resource_type, bad)
    assert any(expected in m for m in found), found


def nsg(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"securityRules": [{**rule, "name": f"rule{i}"} for i, rule in enumerate(rules)]}


def split_rule(*sources: str, port: str = "22", access: str = "Allow", protocol: str = "Tcp") -> dict[str, Any]:
    rule = nsg_rule(port=port, access=access)
    del rule["sourceAddressPrefix"]
    return {**rule, "sourceAddressPrefixes": list(sources), "protocol": protocol}


# "Everywhere" is judged by coverage: the union of every rule's sources that lets SSH in.
SSH_COVERAGE: list[tuple[str, str, dict[str, Any], bool]] = [
    ("0::/0", "azure-native:network:NetworkSecurityGroup", nsg(nsg_rule("0::/0")), True),
    ("netmask form", "azure-native:network:NetworkSecurityGroup", nsg(nsg_rule("0.0.0.0/0.0.0.0")), True),
    ("host bits on /0", "azure-native:network:NetworkSecurityGroup", nsg(nsg_rule("10.1.2.3/0")), True),
    ("halves in one rule", "azure-native:network:NetworkSecurityGroup",
     nsg(split_rule("0.0.0.0/1", "128.0.0.0/1")), True),
    ("halves in two rules", "azure-native:network:NetworkSecurityGroup",
     nsg(nsg_rule("0.0.0.0/1"), nsg_rule("128.0.0.0/1", port="20-30")), True),
    ("ipv6 halves", "azure-native:network:NetworkSecurityGroup", nsg(split_rule("::/1", "8000::/1")), True),
    ("ipv4-mapped", "azure-native:network:SecurityRule", nsg_rule("::ffff:0:0/96"), True),
    ("typed rule, 0::/0", "azure-native:network:SecurityRule", nsg_rule("0::/0"), True),
    ("Hub NSG, halves in two rules", "azure-native:resources:Resource",
     generic("Microsoft.Network", "networkSecurityGroups", {"securityRules": [
         {"name": "a", "properties": nsg_rule("0.0.0.0/1")},
         {"name": "b", "properties": nsg_rule("128.0.0.0/1")},
     ]}), True),
    ("half the internet", "azure-native:network:NetworkSecurityGroup", nsg(nsg_rule("0.0.0.0/1")), False),
    ("halves, one on 443", "azure-native:network:NetworkSecurityGroup",
     nsg(nsg_rule("0.0.0.0/1"), nsg_rule("128.0.0.0/1", port="443")), False),
    ("halves, one denied", "azure-native:network:NetworkSecurityGroup",
     nsg(nsg_rule("0.0.0.0/1"), nsg_rule("128.0.0.0/1", access="Deny")), False),
    ("halves over UDP", "azure-native:network:NetworkSecurityGroup",
     nsg(split_rule("0.0.0.0/1", "128.0.0.0/1", protocol="Udp")), False),
    ("one address short", "azure-native:network:NetworkSecurityGroup",
     nsg(split_rule("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4", "240.0.0.0/5")), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("resource_type", "props", "everywhere"), [c[1:] for c in SSH_COVERAGE], ids=[c[0] for c in SSH_COVERAGE]
)
def test_ssh_from_everywhere_is_judged_by_coverage(resource_type, props, everywhere) -> None:
    found = violations("no-ssh-from-everywhere", resource_type, props)
    assert (found != []) is everywhere, found
    if everywhere:
        assert len(found) == 1 and "allows SSH (22) from everywhere" in found[0]


def test_every_policy_has_a_compliant_and_a_violating_case() -> None:
    assert {c[0] for c in CASES} == set(BY_NAME)
    assert set(STACK_POLICIES) == {"no-ssh-from-everywhere-across-rules"}  # cases below


def typed_rule(nsg_name: str, source: str, group: str = "rg", **kwargs: Any) -> tuple[str, dict[str, Any]]:
    return (
        "azure-native:network:SecurityRule",
        {**nsg_rule(source, **kwargs), "resourceGroupName": group, "networkSecurityGroupName": nsg_name},
    )


def hub_rule(nsg_name: str, source: str) -> tuple[str, dict[str, Any]]:
    props = generic("Microsoft.Network", "securityRules", nsg_rule(source))
    return GENERIC, {**props, "resourceGroupName": "rg", "parentResourcePath": f"networkSecurityGroups/{nsg_name}"}


GENERIC = "azure-native:resources:Resource"
TYPED_NSG = "azure-native:network:NetworkSecurityGroup"

# Rules declared as separate resources are judged together with their NSG.
ACROSS_RESOURCES: list[tuple[str, list[tuple[str, dict[str, Any]]], str | None]] = [
    ("two typed rules, halves", [typed_rule("nsg", "0.0.0.0/1"), typed_rule("NSG", "128.0.0.0/1")], "together"),
    ("typed NSG plus a rule", [
        (TYPED_NSG, {"resourceGroupName": "rg", "networkSecurityGroupName": "nsg",
                     "securityRules": [{**nsg_rule("0.0.0.0/1"), "name": "inline"}]}),
        typed_rule("nsg", "128.0.0.0/1"),
    ], "inline"),
    ("two Hub rules, halves", [hub_rule("nsg", "::/1"), hub_rule("nsg", "8000::/1")], "IPv6"),
    ("halves in different NSGs", [typed_rule("a", "0.0.0.0/1"), typed_rule("b", "128.0.0.0/1")], None),
    ("halves in different groups", [typed_rule("n", "0.0.0.0/1", "g1"), typed_rule("n", "128.0.0.0/1", "g2")], None),
    ("one half denied", [typed_rule("nsg", "0.0.0.0/1"), typed_rule("nsg", "128.0.0.0/1", access="Deny")], None),
    # One resource alone open to everywhere is the per-resource policy's to report, not reported twice.
    ("one rule alone", [typed_rule("nsg", "0.0.0.0/0"), typed_rule("nsg", "10.0.0.0/8")], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("resources", "expected"), [c[1:] for c in ACROSS_RESOURCES], ids=[c[0] for c in ACROSS_RESOURCES]
)
def test_rules_declared_apart_are_judged_together(resources, expected) -> None:
    found = stack_violations("no-ssh-from-everywhere-across-rules", resources)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0] and "from everywhere" in found[0], found


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
def test_the_program_passes_every_mandatory_policy(overrides) -> None:
    recording = recorded_stack(overrides)
    everything = [(r.type, _recorded_as_policy_input(r)) for r in recording.resources]
    assert stack_violations("no-ssh-from-everywhere-across-rules", everything) == []
    checked = set()
    for resource in recording.resources:
        for policy in BY_NAME.values():
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


def test_the_program_with_ssh_open_to_everyone_is_stopped_by_the_pack() -> None:
    recording = recorded_stack({"hubSshSourceCidrs": ["*"], "hubAllowSshFromAnywhere": True})
    found = [
        m
        for r in recording.resources
        for m in violations("no-ssh-from-everywhere", r.type, _recorded_as_policy_input(r))
    ]
    assert len(found) == 1 and "everywhere" in found[0]


SOURCE_LISTS = [
    ["0.0.0.0/1", "128.0.0.0/1"],
    ["0::/0"],
    ["0.0.0.0/0.0.0.0"],
    ["Any"],
    ["203.0.113.0/24", "0.0.0.0/1"],
    ["203.0.113.0/24", "2001:db8::/32"],
]


@pytest.mark.parametrize("sources", SOURCE_LISTS, ids=["+".join(s) for s in SOURCE_LISTS])
def test_the_program_and_the_pack_agree_on_what_is_everywhere(sources) -> None:
    # The program refuses a list without the opt-out exactly when the pack flags the NSG the
    # program declares from it with the opt-out: one judgement, policy/address_space.py.
    from components import config as stack_config

    try:
        recorded_stack({"hubSshSourceCidrs": sources})
        refused = False
    except stack_config.ConfigError as error:
        assert error.keys == {"hubSshSourceCidrs"}
        refused = True
    recording = recorded_stack({"hubSshSourceCidrs": sources, "hubAllowSshFromAnywhere": True})
    flagged = [
        m
        for r in recording.resources
        for m in violations("no-ssh-from-everywhere", r.type, _recorded_as_policy_input(r))
    ]
    assert refused is bool(flagged), (refused, flagged)
    # Both verdicts occur in the table, so agreement is not the trivial "never".
    assert any(sources == s for s in SOURCE_LISTS[:4]) is refused


def test_the_pack_and_the_program_agree_on_the_hub_api_versions() -> None:
    # The pack keeps its own copy so that it runs without the program's modules; they must agree.
    from components.hub_resource import HUB_API_VERSIONS
    from policy.baseline import HUB_API_VERSIONS as POLICY_VERSIONS

    assert dict(POLICY_VERSIONS) == dict(HUB_API_VERSIONS)


def test_the_pack_and_the_program_agree_on_the_connected_cluster_version() -> None:
    from policy.baseline import CLOUD_GENERIC_API_VERSIONS
    from providers.arc_connection import CONNECTED_CLUSTER_API_VERSION

    assert dict(CLOUD_GENERIC_API_VERSIONS) == {"Microsoft.Kubernetes": CONNECTED_CLUSTER_API_VERSION}
