"""The cloud side: an Azure ML workspace with its dependencies and our own container registry."""

from __future__ import annotations

import uuid
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
    operationalinsights,
    resources,
    storage,
)

from components.config import AzureSettings

# Built-in role definition ids (Microsoft Learn, "Azure built-in roles"); the same in every tenant.
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR = "69566ab7-960f-475b-8e7c-b3118f30c6bd"
KEY_VAULT_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"

# What the workspace's identity needs on the resources we bring, instead of relying on the
# service to grant itself roles at creation (it can only when the deployer may assign roles, and
# then silently). Contributor on the registry, not AcrPush: Azure ML builds environment images
# with ACR Tasks, which need registries/scheduleRun/action. Contributor on the storage account:
# the workspace reads the account keys for its default datastores (listKeys).
WORKSPACE_ROLES: Mapping[str, tuple[str, ...]] = {
    "registry": (CONTRIBUTOR,),
    "storage": (CONTRIBUTOR, STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR),
    "key-vault": (KEY_VAULT_ADMINISTRATOR,),
}


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
    principal_id: pulumi.Output[str]

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
        workspace = machinelearningservices.Workspace(
            f"{name}-mlw",
            workspace_name=s.workspace_name,
            resource_group_name=group_name,
            location=s.location,
            identity=machinelearningservices.ManagedServiceIdentityArgs(
                type=machinelearningservices.ManagedServiceIdentityType.SYSTEM_ASSIGNED
            ),
            sku=machinelearningservices.SkuArgs(name="Basic", tier=machinelearningservices.SkuTier.BASIC),
            storage_account=account.id,
            key_vault=vault.id,
            application_insights=insights.id,
            container_registry=registry.id,
            public_network_access=_enabled(s.workspace_public_network_access),
            tags=tags,
            opts=child,
        )

        principal_id = workspace.identity.apply(lambda identity: identity.principal_id if identity else None)
        scopes = {"registry": registry.id, "storage": account.id, "key-vault": vault.id}
        for target, roles in WORKSPACE_ROLES.items():
            for role in roles:
                authorization.RoleAssignment(
                    f"{name}-{target}-{role[:8]}",
                    role_assignment_name=pulumi.Output.all(scopes[target], principal_id).apply(
                        lambda parts, role=role: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{parts[0]}|{role}|{parts[1]}"))
                    ),
                    scope=scopes[target],
                    role_definition_id=client.subscription_id.apply(
                        lambda sub, role=role: (
                            f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}"
                        )
                    ),
                    principal_id=principal_id,
                    principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                    opts=child,
                )

        self.workspace_name = workspace.name
        self.workspace_id = workspace.id
        self.resource_group_name = group_name
        self.subscription_id = client.subscription_id
        self.location = pulumi.Output.from_input(s.location)
        self.registry_name = registry.name
        self.registry_login_server = registry.login_server
        self.registry_id = registry.id
        self.storage_account_id = account.id
        self.principal_id = principal_id
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
                "principalId": self.principal_id,
            }
        )
