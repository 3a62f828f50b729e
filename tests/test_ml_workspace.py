"""The cloud side under mocks: secure defaults, explicit provider, names, outputs, opt-outs."""

from __future__ import annotations

from typing import Any

import pytest

from components import naming
from components.ml_workspace import (
    CONTRIBUTOR,
    KEY_VAULT_ADMINISTRATOR,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
)
from tests.conftest import recorded_stack
from tests.harness.pulumi_mocks import FAKE_IDENTITY_PRINCIPAL, Recording

STORAGE = "azure-native:storage:StorageAccount"
VAULT = "azure-native:keyvault:Vault"
REGISTRY = "azure-native:containerregistry:Registry"
WORKSPACE = "azure-native:machinelearningservices:Workspace"
ROLE = "azure-native:authorization:RoleAssignment"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
INSIGHTS = "azure-native:applicationinsights:Component"
COMPONENT = "edge-training:cloud:MlWorkspace"


def cloud_provider(recording: Recording):
    return next(r for r in recording.of_type("pulumi:providers:azure-native") if r.name == "azure")


@pytest.fixture(scope="module")
def recording() -> Recording:
    return recorded_stack()


def test_workspace_storage_is_locked_down(recording: Recording) -> None:
    account = recording.one(STORAGE).inputs
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    assert account["allowCrossTenantReplication"] is False


def test_key_vault_uses_rbac_and_purge_protection(recording: Recording) -> None:
    props = recording.one(VAULT).inputs["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props


def test_our_registry_has_no_admin_user_and_no_anonymous_pull(recording: Recording) -> None:
    registry = recording.one(REGISTRY).inputs
    assert registry["adminUserEnabled"] is False
    assert registry["anonymousPullEnabled"] is False
    assert registry["sku"] == {"name": "Basic"}


def test_workspace_links_everything_explicitly(recording: Recording) -> None:
    workspace = recording.one(WORKSPACE)
    inputs = workspace.inputs
    identity = recording.one(IDENTITY)
    assert inputs["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [identity.id]}
    assert inputs["primaryUserAssignedIdentity"] == identity.id
    assert inputs["containerRegistry"] == recording.one(REGISTRY).id
    assert inputs["storageAccount"] == recording.one(STORAGE).id
    assert inputs["keyVault"] == recording.one(VAULT).id
    assert inputs["applicationInsights"] == recording.one("azure-native:applicationinsights:Component").id
    insights = recording.one("azure-native:applicationinsights:Component").inputs
    assert insights["workspaceResourceId"] == recording.one("azure-native:operationalinsights:Workspace").id
    assert insights["ingestionMode"] == "LogAnalytics"


def own_roles(recording: Recording) -> list:
    """The workspace component's own assignments (the Kubernetes mode adds roles on the cluster,
    tested in test_edge_kubernetes)."""
    workspace = recording.one("edge-training:cloud:MlWorkspace")
    return [a for a in recording.of_type(ROLE) if a.parent == workspace.urn]


def granted(recording: Recording) -> set[tuple[str, str]]:
    scopes = {
        recording.one(REGISTRY).id: "registry",
        recording.one(STORAGE).id: "storage",
        recording.one(VAULT).id: "key-vault",
        recording.one(INSIGHTS).id: "app-insights",
        recording.one(WORKSPACE).id: "workspace",
    }
    return {(scopes[a.inputs["scope"]], a.inputs["roleDefinitionId"].rsplit("/", 1)[1]) for a in own_roles(recording)}


def test_the_workspace_identity_has_exactly_the_roles_microsoft_documents(recording: Recording) -> None:
    # how-to-identity-based-service-authentication, "User-assigned managed identity": the table of
    # roles a user-assigned workspace identity needs (Key Vault with the RBAC permission model).
    assert granted(recording) == {
        ("workspace", CONTRIBUTOR),
        ("storage", CONTRIBUTOR),
        ("storage", STORAGE_BLOB_DATA_CONTRIBUTOR),
        ("key-vault", CONTRIBUTOR),
        ("key-vault", KEY_VAULT_ADMINISTRATOR),
        ("registry", CONTRIBUTOR),
        ("app-insights", CONTRIBUTOR),
    }
    for assignment in own_roles(recording):
        # The identity we declare, never the workspace's own: no assignment the service also makes.
        assert assignment.inputs["principalId"] == FAKE_IDENTITY_PRINCIPAL
        assert assignment.inputs["principalType"] == "ServicePrincipal"
        assert assignment.inputs["roleDefinitionId"].startswith("/subscriptions/")


def test_the_workspace_waits_for_its_dependencies_roles(recording: Recording) -> None:
    workspace = recording.one(WORKSPACE)
    before = {a.urn for a in own_roles(recording) if a.inputs["scope"] != workspace.id}
    assert len(before) == 6
    assert before <= set(workspace.dependencies)
    (after,) = [a for a in own_roles(recording) if a.inputs["scope"] == workspace.id]
    assert after.urn not in workspace.dependencies


def test_role_assignment_names_are_stable_across_runs(run_stack) -> None:
    def names(recording: Recording) -> list[str]:
        return sorted(a.inputs["roleAssignmentName"] for a in recording.of_type(ROLE))

    first = names(run_stack())
    assert first == names(run_stack())
    assert len(set(first)) == len(first)


def test_every_child_has_the_component_as_parent_and_the_explicit_provider(recording: Recording) -> None:
    component = recording.one(COMPONENT)
    provider = cloud_provider(recording)
    children = recording.children_of(component)
    assert {c.type for c in children} >= {STORAGE, VAULT, REGISTRY, WORKSPACE, ROLE, IDENTITY}
    for child in children:
        assert child.provider_urn == provider.urn, child.name
    # Nothing anywhere uses a default provider, except the attach step: a dynamic resource is
    # served by Pulumi's dynamic provider, with its own implementation carried in `__provider`.
    for resource in recording.resources:
        if resource.type.startswith("pulumi-python:dynamic/"):
            assert "__provider" in resource.secret_inputs
        elif resource.custom and not resource.type.startswith("pulumi:providers:"):
            assert resource.provider, f"{resource.type} {resource.name} uses the default provider"
    assert provider.inputs["location"] == "westeurope"


def test_the_configured_subscription_reaches_the_provider(run_stack) -> None:
    recording = run_stack({"subscriptionId": "44444444-4444-4444-4444-444444444444"})
    assert cloud_provider(recording).inputs["subscriptionId"] == "44444444-4444-4444-4444-444444444444"
    assert "subscriptionId" not in cloud_provider(run_stack({"subscriptionId": None})).inputs


@pytest.mark.parametrize("stack", ["dev", "production-westeurope", "Feature_42", "x" * 40])
def test_names_are_valid_for_any_stack(stack: str) -> None:
    recording = recorded_stack(stack=stack)
    assert naming.STORAGE_ACCOUNT.problem(recording.one(STORAGE).inputs["accountName"]) is None
    assert naming.CONTAINER_REGISTRY.problem(recording.one(REGISTRY).inputs["registryName"]) is None
    assert naming.ML_WORKSPACE.problem(recording.one(WORKSPACE).inputs["workspaceName"]) is None
    vault_name = recording.one(VAULT).inputs["vaultName"]
    assert 3 <= len(vault_name) <= 24 and vault_name[0].isalpha() and vault_name.isalnum()


def test_component_outputs_and_stack_exports(recording: Recording) -> None:
    outputs = recording.one(COMPONENT).outputs
    for key in (
        "workspaceName",
        "workspaceId",
        "resourceGroupName",
        "subscriptionId",
        "registryLoginServer",
        "registryId",
        "storageAccountId",
    ):
        assert outputs.get(key), key
    exports = {k: v.value for k, v in recording.exports.items()}
    assert exports["workspaceName"] == "mlw-dev"
    assert exports["resourceGroupName"] == "rg-edge-training-dev"
    assert exports["registryLoginServer"] == f"{exports['registryName']}.azurecr.io"
    for key in ("azureSubscriptionId", "location", "workspaceId", "registryId", "workspaceStorageAccountId"):
        assert exports[key], key


def test_an_existing_resource_group_is_used_not_created(run_stack) -> None:
    recording = run_stack({"resourceGroupName": "rg-shared-ml"})
    assert recording.of_type("azure-native:resources:ResourceGroup") == []
    cloud = cloud_provider(recording).urn
    for resource in recording.resources:
        if resource.provider_urn == cloud and "resourceGroupName" in resource.inputs:
            assert resource.inputs["resourceGroupName"] == "rg-shared-ml"
    assert recording.exports["resourceGroupName"].value == "rg-shared-ml"


def _differences(before: Recording, after: Recording) -> set[tuple[str, str]]:
    """(resource name, top-level input) pairs whose values differ between two runs."""

    def by_name(recording: Recording) -> dict[str, dict[str, Any]]:
        return {r.name: r.inputs for r in recording.resources}

    a, b = by_name(before), by_name(after)
    assert a.keys() == b.keys()
    return {(n, k) for n in a for k in a[n].keys() | b[n].keys() if a[n].get(k) != b[n].get(k)}


@pytest.mark.parametrize(
    ("base", "opt_out", "changed"),
    [
        ({}, {"workspacePublicNetworkAccess": False}, {("cloud-mlw", "publicNetworkAccess")}),
        (
            {"registrySku": "Premium"},
            {"registrySku": "Premium", "registryPublicNetworkAccess": False},
            {("cloud-acr", "publicNetworkAccess")},
        ),
    ],
    ids=["workspace", "registry"],
)
def test_an_opt_out_changes_exactly_the_property_it_names(base, opt_out, changed) -> None:
    before, after = recorded_stack(base), recorded_stack(opt_out)
    assert _differences(before, after) == changed
    (resource_name, prop) = next(iter(changed))
    assert next(r for r in after.resources if r.name == resource_name).inputs[prop] == "Disabled"
    assert next(r for r in before.resources if r.name == resource_name).inputs[prop] == "Enabled"
