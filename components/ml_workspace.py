"""The cloud side: an Azure ML workspace with its dependencies and our own container registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import (
    applicationinsights,
    authorization,
    containerregistry,
    keyvault,
    machinelearningservices,
    managedidentity,
    operationalinsights,
    resources,
    storage,
)

from components.config import AzureSettings
from components.roles import assign_role

# Built-in role definition ids (Microsoft Learn, "Azure built-in roles"); the same in every tenant.
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
KEY_VAULT_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"

# The workspace signs in as a user-assigned identity that this stack declares. Microsoft
# documents two workspace identity types (learn.microsoft.com/azure/machine-learning/
# how-to-identity-based-service-authentication, "Workspace identity types"): with a system-assigned
# identity, role assignment creation is "Managed by Microsoft", so assignments of our own for it
# duplicate the service's (409 RoleAssignmentExists) and what it grants is invisible here; with a
# user-assigned identity it is "Managed by you", and the same article lists the roles it needs.
# These are exactly that table's roles (Key Vault with the RBAC permission model, which ours uses):
WORKSPACE_ROLES: Mapping[str, tuple[str, ...]] = {
    "storage": (CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR),
    "key-vault": (CONTRIBUTOR, KEY_VAULT_ADMINISTRATOR),
    "registry": (CONTRIBUTOR,),
    "app-insights": (CONTRIBUTOR,),
    "workspace": (CONTRIBUTOR,),
}
# Granted before the workspace exists, so it never starts without access to its dependencies;
# the workspace-scoped role can only follow the workspace.
BEFORE_WORKSPACE = ("storage", "key-vault", "registry", "app-insights")


def _enabled(flag: bool) -> str:
    return "Enabled" if flag else "Disabled"


@dataclass(frozen=True)
class MlWorkspaceArgs:
    settings: AzureSettings
    tags: Mapping[str, str]
    provider: azure_native.Provider
    """The explicit public-Azure provider; every child uses it."""


class MlWorkspace(pulumi.ComponentResource):
    """Azure ML workspace, its storage, key vault, Log Analytics + App Insights, and our registry.

    Secure by default: storage https-only with TLS 1.2, no public blob access and no cross-tenant
    replication; key vault with RBAC and purge protection; registry without the admin user or
    anonymous pull. Public network access of workspace and registry follows the config.
    """

    workspace_name: pulumi.Output[str]
    workspace_id: pulumi.Output[str]
    resource_group_name: pulumi.Output[str]
    subscription_id: pulumi.Output[str]
    location: pulumi.Output[str]
    registry_name: pulumi.Output[str]
    registry_login_server: pulumi.Output[str]
    registry_id: pulumi.Output[str]
    storage_account_id: pulumi.Output[str]
    identity_id: pulumi.Output[str]
    """The workspace's user-assigned identity; other components grant roles to its principal."""
    identity_principal_id: pulumi.Output[str]
    identity_client_id: pulumi.Output[str]

    def __init__(self, name: str, args: MlWorkspaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:cloud:MlWorkspace", name, None, opts)
        s = args.settings
        tags = dict(args.tags)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        client = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self, provider=args.provider)
        )

        if s.resource_group_name is None:
            group = resources.ResourceGroup(
                f"{name}-rg",
                resource_group_name=s.created_resource_group_name,
                location=s.location,
                tags=tags,
                opts=child,
            )
            group_name: pulumi.Output[str] = group.name
        else:
            group_name = pulumi.Output.from_input(s.resource_group_name)

        account = storage.StorageAccount(
            f"{name}-storage",
            account_name=s.workspace_storage_account_name,
            resource_group_name=group_name,
            location=s.location,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=storage.SkuName.STANDARD_LRS),
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            allow_blob_public_access=False,
            allow_cross_tenant_replication=False,
            tags=tags,
            opts=child,
        )
        vault = keyvault.Vault(
            f"{name}-kv",
            vault_name=s.key_vault_name,
            resource_group_name=group_name,
            location=s.location,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=client.tenant_id,
                sku=keyvault.SkuArgs(family=keyvault.SkuFamily.A, name=keyvault.SkuName.STANDARD),
                enable_rbac_authorization=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=90,
                enable_purge_protection=True,
            ),
            tags=tags,
            opts=child,
        )
        logs = operationalinsights.Workspace(
            f"{name}-logs",
            workspace_name=f"log-{s.workspace_name}",
            resource_group_name=group_name,
            location=s.location,
            sku=operationalinsights.WorkspaceSkuArgs(name=operationalinsights.WorkspaceSkuNameEnum.PER_GB2018),
            retention_in_days=30,
            tags=tags,
            opts=child,
        )
        insights = applicationinsights.Component(
            f"{name}-appi",
            resource_name_=f"appi-{s.workspace_name}",
            resource_group_name=group_name,
            location=s.location,
            kind="web",
            application_type=applicationinsights.ApplicationType.WEB,
            ingestion_mode=applicationinsights.IngestionMode.LOG_ANALYTICS,
            workspace_resource_id=logs.id,
            tags=tags,
            opts=child,
        )
        # Our own registry: the one Azure ML would create on first image build has the admin user on.
        registry = containerregistry.Registry(
            f"{name}-acr",
            registry_name=s.registry_name,
            resource_group_name=group_name,
            location=s.location,
            sku=containerregistry.SkuArgs(name=s.registry_sku),
            admin_user_enabled=False,
            anonymous_pull_enabled=False,
            public_network_access=_enabled(s.registry_public_network_access),
            tags=tags,
            opts=child,
        )
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-id",
            resource_name_=f"id-{s.workspace_name}",
            resource_group_name=group_name,
            location=s.location,
            tags=tags,
            opts=child,
        )
        scopes = {"storage": account.id, "key-vault": vault.id, "registry": registry.id, "app-insights": insights.id}

        def grant(target: str, scope: pulumi.Input[str]) -> list[authorization.RoleAssignment]:
            return [
                assign_role(
                    f"{name}-{target}-{role[:8]}", scope, role, identity.principal_id, client.subscription_id, child
                )
                for role in WORKSPACE_ROLES[target]
            ]

        before = [assignment for target in BEFORE_WORKSPACE for assignment in grant(target, scopes[target])]
        workspace = machinelearningservices.Workspace(
            f"{name}-mlw",
            workspace_name=s.workspace_name,
            resource_group_name=group_name,
            location=s.location,
            identity=machinelearningservices.ManagedServiceIdentityArgs(
                type=machinelearningservices.ManagedServiceIdentityType.USER_ASSIGNED,
                user_assigned_identities=[identity.id],
            ),
            primary_user_assigned_identity=identity.id,
            sku=machinelearningservices.SkuArgs(name="Basic", tier=machinelearningservices.SkuTier.BASIC),
            storage_account=account.id,
            key_vault=vault.id,
            application_insights=insights.id,
            container_registry=registry.id,
            public_network_access=_enabled(s.workspace_public_network_access),
            tags=tags,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=before)),
        )
        grant("workspace", workspace.id)

        self.workspace_name = workspace.name
        self.workspace_id = workspace.id
        self.resource_group_name = group_name
        self.subscription_id = client.subscription_id
        self.location = pulumi.Output.from_input(s.location)
        self.registry_name = registry.name
        self.registry_login_server = registry.login_server
        self.registry_id = registry.id
        self.storage_account_id = account.id
        self.identity_id = identity.id
        self.identity_principal_id = identity.principal_id
        self.identity_client_id = identity.client_id
        self.register_outputs(
            {
                "workspaceName": self.workspace_name,
                "workspaceId": self.workspace_id,
                "resourceGroupName": self.resource_group_name,
                "subscriptionId": self.subscription_id,
                "location": self.location,
                "registryName": self.registry_name,
                "registryLoginServer": self.registry_login_server,
                "registryId": self.registry_id,
                "storageAccountId": self.storage_account_id,
                "identityId": self.identity_id,
                "identityPrincipalId": self.identity_principal_id,
                "identityClientId": self.identity_client_id,
            }
        )
