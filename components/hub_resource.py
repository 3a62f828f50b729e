"""How every Azure Stack Hub resource is declared: a `HubArmResource` at a Hub API version.

Azure Stack Hub accepts only the API versions of its profiles. The typed classes of
pulumi-azure-native 3.x send far newer ones, and its generic `resources:Resource` checks for an
existing resource at its own newer version before every create (providers/hub_arm_resource.py
says more). So each Hub resource goes through our own dynamic provider, at the explicit version
of the newest profile, 2020-09-01-hybrid (Microsoft Learn, "Manage API version profiles in Azure
Stack Hub").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.config import HubSettings
from providers.hub_arm_resource import HUB_API_VERSIONS, HUB_PROFILE, HubArmResource, HubArmResourceArgs

__all__ = [
    "HUB_API_VERSIONS",
    "HUB_PROFILE",
    "HubEndpoint",
    "HubResourceSpec",
    "declare",
    "property_of",
]

# Fields that are secret wherever they appear, per type: taken out of `properties` into the
# resource's secret part, so the state keeps them encrypted and the plain properties stay readable.
SECRET_PATHS: Mapping[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("Microsoft.Compute", "virtualMachines"): (("osProfile", "customData"), ("osProfile", "adminPassword")),
    ("Microsoft.Compute", "extensions"): (("protectedSettings",),),
}


@dataclass(frozen=True)
class HubEndpoint:
    """Which Hub, and how to sign in to it: non-secret. The credential itself is read from the
    HUB_ARM_* variables by the provider, at the moment it talks to the Hub."""

    arm_endpoint: str
    subscription_id: str
    identity_provider: str
    tenant_id: str | None
    ca_certificates: str | None = None
    """The Hub's CA (PEM), trusted next to certifi's roots (hubCaCertificates)."""

    @classmethod
    def of(cls, settings: HubSettings) -> HubEndpoint:
        return cls(
            arm_endpoint=settings.arm_endpoint,
            subscription_id=settings.subscription_id,
            identity_provider=settings.identity_provider,
            tenant_id=None if settings.uses_adfs else settings.tenant_id,
            ca_certificates=settings.ca_certificates or None,
        )


@dataclass(frozen=True)
class HubResourceSpec:
    """One ARM resource on the Hub: where it lives and the body sent to Resource Manager."""

    namespace: str
    resource_type: str
    name: str
    resource_group_name: str
    properties: pulumi.Input[Mapping[str, Any]]
    hub: HubEndpoint
    parent_resource_path: pulumi.Input[str] = ""
    location: str | None = None
    sku: Mapping[str, Any] | None = None
    kind: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return HUB_API_VERSIONS[self.namespace]


def _split_secrets(
    properties: pulumi.Input[Mapping[str, Any]], paths: tuple[tuple[str, ...], ...]
) -> tuple[pulumi.Input[Mapping[str, Any]], dict[str, Any], bool]:
    """(plain properties, secret properties, whether every path could be followed). A path runs
    through plain dicts; one that passes through an Output cannot be split here."""
    if not isinstance(properties, Mapping):  # the whole body is an Output
        return properties, {}, not paths
    plain = dict(properties)
    secret: dict[str, Any] = {}
    complete = True
    for path in paths:
        source: Any = plain
        target = secret
        for key in path[:-1]:
            child = source.get(key) if isinstance(source, dict) else None
            if child is None:
                break
            if not isinstance(child, Mapping):
                complete = False
                break
            source[key] = dict(child)  # copy on the way down: the caller's spec stays as it was
            source = source[key]
            target = target.setdefault(key, {})
        else:
            if isinstance(source, dict) and path[-1] in source:
                target[path[-1]] = source.pop(path[-1])
    return plain, _drop_empty(secret), complete


def _drop_empty(value: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_empty(v) if isinstance(v, dict) else v) for k, v in value.items() if v != {}}


def declare(logical_name: str, spec: HubResourceSpec, opts: pulumi.ResourceOptions) -> HubArmResource:
    """Declare `spec` as a HubArmResource at its Hub API version."""
    paths = SECRET_PATHS.get((spec.namespace, spec.resource_type), ())
    plain, secret, complete = _split_secrets(spec.properties, paths)
    if not complete:
        # A secret path runs through an Output: keep the whole of properties secret instead.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["properties"]))
    hub = spec.hub
    return HubArmResource(
        logical_name,
        HubArmResourceArgs(
            arm_endpoint=hub.arm_endpoint,
            subscription_id=hub.subscription_id,
            tenant_id=hub.tenant_id,
            identity_provider=hub.identity_provider,
            ca_certificates=hub.ca_certificates,
            namespace=spec.namespace,
            resource_type=spec.resource_type,
            resource_name=spec.name,
            resource_group_name=spec.resource_group_name,
            api_version=spec.api_version,
            parent_resource_path=spec.parent_resource_path,
            location=spec.location,
            sku=dict(spec.sku) if spec.sku is not None else None,
            kind=spec.kind,
            tags=spec.tags,
            properties=plain,
            secret_properties=secret or None,
        ),
        opts=opts,
    )


def property_of(resource: HubArmResource, *path: str) -> pulumi.Output[Any]:
    """A value Resource Manager returns in the resource's `properties`, e.g. a public IP's address."""

    def dig(properties: Any) -> Any:
        value = properties
        for key in path:
            value = (value or {}).get(key)
        return value

    return resource.observed_properties.apply(dig)
