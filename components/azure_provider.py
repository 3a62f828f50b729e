"""The explicit provider for public Azure, so no resource falls back to the ambient default."""

from __future__ import annotations

import pulumi
import pulumi_azure_native as azure_native

from components.config import AzureSettings


def azure_provider(settings: AzureSettings, opts: pulumi.ResourceOptions | None = None) -> azure_native.Provider:
    """Public Azure's Resource Manager with the credentials of whoever runs Pulumi.

    No credential is passed here: the provider reads the standard ARM_* environment variables,
    so the same program runs with an Azure CLI login on a laptop, OIDC workload identity in a
    pipeline (ARM_USE_OIDC=true, ARM_CLIENT_ID, ARM_TENANT_ID), or a service principal
    (ARM_CLIENT_ID, ARM_CLIENT_SECRET or ARM_CLIENT_CERTIFICATE_PATH, ARM_TENANT_ID).
    """
    return azure_native.Provider(
        "azure",
        location=settings.location,
        # None: ARM_SUBSCRIPTION_ID, or the Azure CLI's default subscription.
        subscription_id=settings.subscription_id,
        opts=opts,
    )
