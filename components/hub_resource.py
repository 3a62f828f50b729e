"""How every Azure Stack Hub resource is declared: a generic ARM resource at a Hub API version.

Azure Stack Hub accepts only the API versions of its profiles, and the typed classes of
pulumi-azure-native 3.x send far newer ones, which the Hub rejects. So each Hub resource goes
through `pulumi_azure_native.resources.Resource` with the explicit version of the newest profile,
2020-09-01-hybrid (Microsoft Learn, "Manage API version profiles in Azure Stack Hub").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_azure_native import resources

HUB_PROFILE = "2020-09-01-hybrid"
HUB_API_VERSIONS: Mapping[str, str] = {
    "Microsoft.Storage": "2019-06-01",
    "Microsoft.Network": "2018-11-01",
    "Microsoft.Compute": "2020-06-01",
    "Microsoft.Resources": "2019-10-01",
}


@dataclass(frozen=True)
class HubResourceSpec:
    """One ARM resource on the Hub: where it lives and the body sent to Resource Manager."""

    namespace: str
    resource_type: str
    name: str
    resource_group_name: str
    properties: Mapping[str, Any]
    parent_resource_path: str = ""
    location: str | None = None
    sku: Mapping[str, Any] | None = None
    kind: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return HUB_API_VERSIONS[self.namespace]


def declare(logical_name: str, spec: HubResourceSpec, opts: pulumi.ResourceOptions) -> resources.Resource:
    """Declare `spec` as a generic resource at its Hub API version."""
    return resources.Resource(
        logical_name,
        resource_provider_namespace=spec.namespace,
        resource_type=spec.resource_type,
        parent_resource_path=spec.parent_resource_path,
        resource_name_=spec.name,
        resource_group_name=spec.resource_group_name,
        api_version=spec.api_version,
        location=spec.location,
        sku=dict(spec.sku) if spec.sku is not None else None,
        kind=spec.kind,
        properties=dict(spec.properties),
        tags=dict(spec.tags) or None,
        opts=opts,
    )


def property_of(resource: resources.Resource, *path: str) -> pulumi.Output[Any]:
    """A value Resource Manager returns in the resource's `properties`, e.g. a public IP's address."""

    def dig(properties: Any) -> Any:
        value = properties
        for key in path:
            value = (value or {}).get(key)
        return value

    return resource.properties.apply(dig)
