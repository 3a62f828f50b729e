"""Edge side: the Hub storage account that holds the private training data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native

from components.config import HubSettings
from components.hub_resource import HubResourceSpec, declare, property_of


def storage_account_spec(settings: HubSettings, tags: Mapping[str, str]) -> HubResourceSpec:
    # General purpose v1 ("Storage"): the kind every Azure Stack Hub build offers. TLS is the
    # Hub's stamp-wide policy (Set-TLSPolicy), not an account property there.
    return HubResourceSpec(
        namespace="Microsoft.Storage",
        resource_type="storageAccounts",
        name=settings.storage_account_name,
        resource_group_name=settings.resource_group_name,
        location=settings.location,
        sku={"name": "Standard_LRS"},
        kind="Storage",
        properties={"supportsHttpsTrafficOnly": True},
        tags=tags,
    )


def container_spec(settings: HubSettings) -> HubResourceSpec:
    return HubResourceSpec(
        namespace="Microsoft.Storage",
        resource_type="containers",
        parent_resource_path=f"storageAccounts/{settings.storage_account_name}/blobServices/default",
        name=settings.data_container_name,
        resource_group_name=settings.resource_group_name,
        properties={"publicAccess": "None"},
    )


@dataclass(frozen=True)
class HubStorageArgs:
    settings: HubSettings
    tags: Mapping[str, str]
    provider: azure_native.Provider


class HubStorage(pulumi.ComponentResource):
    """A storage account on the Hub (https only) and a private blob container for the data."""

    account_name: pulumi.Output[str]
    account_id: pulumi.Output[str]
    blob_endpoint: pulumi.Output[str]
    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: HubStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:edge:HubStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        account = declare(f"{name}-account", storage_account_spec(args.settings, args.tags), child)
        # The container names its account only by path, so the dependency is stated.
        container = declare(
            f"{name}-container",
            container_spec(args.settings),
            pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[account])),
        )
        self.account_name = account.name
        self.account_id = account.id
        self.blob_endpoint = property_of(account, "primaryEndpoints", "blob")
        self.container_name = container.name
        self.register_outputs(
            {
                "accountName": self.account_name,
                "accountId": self.account_id,
                "blobEndpoint": self.blob_endpoint,
                "containerName": self.container_name,
            }
        )
