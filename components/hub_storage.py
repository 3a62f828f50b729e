"""Edge side: the Hub storage account that holds the private training data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from components.config import HubSettings
from components.hub_resource import HubEndpoint, HubResourceSpec, declare, property_of
from providers.hub_blob_container import HubBlobContainer, HubBlobContainerArgs


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
        hub=HubEndpoint.of(settings),
    )


def container_args(
    settings: HubSettings, account_name: pulumi.Input[str], blob_endpoint: pulumi.Input[str]
) -> HubBlobContainerArgs:
    # Through the blob service, not Resource Manager: a Hub serves no ARM path for containers
    # (providers/hub_blob_container.py says where that is written). The account's name and
    # endpoint come from its outputs: replacing the account (which deletes its containers) then
    # makes Pulumi replace the container too.
    hub = HubEndpoint.of(settings)
    return HubBlobContainerArgs(
        arm_endpoint=hub.arm_endpoint,
        subscription_id=hub.subscription_id,
        identity_provider=hub.identity_provider,
        tenant_id=hub.tenant_id,
        ca_certificates=hub.ca_certificates,
        resource_group_name=settings.resource_group_name,
        account_name=account_name,
        blob_endpoint=blob_endpoint,
        container_name=settings.data_container_name,
    )


@dataclass(frozen=True)
class HubStorageArgs:
    settings: HubSettings
    tags: Mapping[str, str]


class HubStorage(pulumi.ComponentResource):
    """A storage account on the Hub (https only) and a private blob container for the data, made
    through the blob service."""

    account_name: pulumi.Output[str]
    account_id: pulumi.Output[str]
    blob_endpoint: pulumi.Output[str]
    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: HubStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:edge:HubStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = declare(f"{name}-account", storage_account_spec(args.settings, args.tags), child)
        self.account_name = account.name
        self.account_id = account.id
        self.blob_endpoint = property_of(account, "primaryEndpoints", "blob")
        container = HubBlobContainer(
            f"{name}-container", container_args(args.settings, account.name, self.blob_endpoint), child
        )
        self.container_name = container.name
        self.register_outputs(
            {
                "accountName": self.account_name,
                "accountId": self.account_id,
                "blobEndpoint": self.blob_endpoint,
                "containerName": self.container_name,
            }
        )
