"""The explicit provider for the Azure Stack Hub's own Resource Manager."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pulumi
import pulumi_azure_native as azure_native

from components.config import HubSettings

# The Hub's service principal comes from variables of its own: the cloud provider reads the
# standard ARM_* ones, and one process cannot hold two identities in the same variables.
HUB_CLIENT_ID = "HUB_ARM_CLIENT_ID"
HUB_CLIENT_SECRET = "HUB_ARM_CLIENT_SECRET"  # noqa: S105 (a variable name, not a secret)
HUB_CLIENT_CERTIFICATE_PATH = "HUB_ARM_CLIENT_CERTIFICATE_PATH"
HUB_CLIENT_CERTIFICATE_PASSWORD = "HUB_ARM_CLIENT_CERTIFICATE_PASSWORD"  # noqa: S105


def hub_provider(
    settings: HubSettings, environ: Mapping[str, str] = os.environ, opts: pulumi.ResourceOptions | None = None
) -> azure_native.Provider:
    """Resource Manager of the Hub at `settings.arm_endpoint`, discovered through its metadata host.

    AD FS Hubs (disconnected) use the tenant "adfs" and no instance discovery: there is no
    Microsoft Entra authority to validate against.
    """
    credentials: dict[str, pulumi.Input[str]] = {}
    if client_id := environ.get(HUB_CLIENT_ID):
        credentials["client_id"] = client_id
        if secret := environ.get(HUB_CLIENT_SECRET):
            credentials["client_secret"] = pulumi.Output.secret(secret)
        if certificate := environ.get(HUB_CLIENT_CERTIFICATE_PATH):
            credentials["client_certificate_path"] = certificate
        if password := environ.get(HUB_CLIENT_CERTIFICATE_PASSWORD):
            credentials["client_certificate_password"] = pulumi.Output.secret(password)
    else:
        pulumi.log.warn(
            f"{HUB_CLIENT_ID} is not set: the Hub provider falls back to the ambient credentials "
            "(ARM_* variables or the Azure CLI), which must then be signed in to the Hub, not to Azure."
        )
    return azure_native.Provider(
        "hub",
        metadata_host=settings.metadata_host,
        location=settings.location,
        subscription_id=settings.subscription_id,
        tenant_id="adfs" if settings.uses_adfs else settings.tenant_id,
        disable_instance_discovery=True if settings.uses_adfs else None,
        **credentials,
        opts=opts,
    )
