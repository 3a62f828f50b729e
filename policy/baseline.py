"""edge-training's baseline as CrossGuard policies, for this stack or any other.

Each check is a plain function over one resource's type and properties, wrapped into a
`ResourceValidationPolicy`; the same rule covers the typed azure-native resource and the generic
resources the Hub side declares (`HubArmResource`, and azure-native's generic `resources.Resource`,
which a stack may still hold), whose bodies have the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)

try:  # imported as the package `policy`: by the program and the tests
    from policy.address_space import everywhere_reason
except ImportError:  # run by `pulumi preview --policy-pack policy`, from the pack's own directory
    from address_space import everywhere_reason  # type: ignore[no-redef]

# ARM resources declared by namespace, type and body: our Hub provider's, and azure-native's.
HUB_ARM = "pulumi-python:dynamic/edge-training:HubArmResource"
GENERIC = (HUB_ARM, "azure-native:resources:Resource")
# Azure Stack Hub profile 2020-09-01-hybrid (the versions components/hub_resource.py uses).
HUB_API_VERSIONS: Mapping[str, str] = {
    "Microsoft.Storage": "2019-06-01",
    "Microsoft.Network": "2018-11-01",
    "Microsoft.Compute": "2020-06-01",
    "Microsoft.Resources": "2019-10-01",
}
# The one generic resource on the cloud side: the Arc connected cluster, at the stable version the
# typed class of pulumi-azure-native 3.29 does not send (components/edge_kubernetes.py).
CLOUD_GENERIC_API_VERSIONS: Mapping[str, str] = {"Microsoft.Kubernetes": "2026-05-01"}
SECRET_NAMES = {
    "adminpassword", "password", "clientsecret", "clientcertificatepassword", "privatekey", "privatekeydata",
    "accountkey", "connectionstring", "sastoken", "sshprivatekey",
}  # fmt: skip

Check = Callable[[str, Mapping[str, Any]], Iterator[str]]


def _raw(props: Any) -> Any:
    """The properties with `Secret` markers kept (the policy SDK's proxy unwraps them on read)."""
    try:
        return props["__target"]
    except (KeyError, TypeError):
        return props


def _plain(value: Any) -> Any:
    # A property holding a secret anywhere inside (a VM's first-boot data in the Kubernetes mode)
    # reaches the pack as one Secret: the checks read through it.
    while isinstance(value, Secret):
        value = value.value
    return value


def _generic(resource_type: str, props: Mapping[str, Any], namespace: str, kind: str) -> bool:
    return (
        resource_type in GENERIC
        and props.get("resourceProviderNamespace") == namespace
        and props.get("resourceType") == kind
    )


# --- SSH -----------------------------------------------------------------------------------------


def _covers_22(ranges: list[str]) -> bool:
    for item in ranges:
        item = str(item).strip()
        if item == "*":
            return True
        low, _, high = item.partition("-")
        try:
            if int(low) <= 22 <= int(high or low):
                return True
        except ValueError:
            continue
    return False


def _allows_ssh_in(rule: Mapping[str, Any]) -> bool:
    if str(rule.get("access", "")).lower() != "allow" or str(rule.get("direction", "")).lower() != "inbound":
        return False
    if str(rule.get("protocol", "*")).lower() not in ("tcp", "*"):
        return False
    ports = [rule["destinationPortRange"]] if rule.get("destinationPortRange") else []
    ports += list(rule.get("destinationPortRanges") or [])
    return _covers_22(ports)


def _sources(rule: Mapping[str, Any]) -> list[str]:
    sources = [rule["sourceAddressPrefix"]] if rule.get("sourceAddressPrefix") else []
    return sources + [str(s) for s in rule.get("sourceAddressPrefixes") or []]


def _security_rules(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if resource_type == "azure-native:network:NetworkSecurityGroup":
        for rule in props.get("securityRules") or []:
            yield str(rule.get("name", "?")), rule
    elif resource_type == "azure-native:network:SecurityRule":
        yield str(props.get("securityRuleName", "?")), props
    elif _generic(resource_type, props, "Microsoft.Network", "networkSecurityGroups"):
        for rule in (_plain(props.get("properties")) or {}).get("securityRules") or []:
            yield str(rule.get("name", "?")), rule.get("properties") or {}
    elif _generic(resource_type, props, "Microsoft.Network", "securityRules"):
        yield str(props.get("resourceName", "?")), _plain(props.get("properties")) or {}


def no_ssh_from_everywhere(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    # Judged by coverage over every rule of the resource that lets SSH in: two rules (or two
    # prefixes of one rule) for 0.0.0.0/1 and 128.0.0.0/1 open SSH to everyone as surely as one
    # rule for 0.0.0.0/0. Deny rules are not subtracted: an allow-everywhere rule is refused as is.
    names: list[str] = []
    sources: list[str] = []
    for name, rule in _security_rules(resource_type, props):
        if _allows_ssh_in(rule):
            names.append(name)
            sources += _sources(rule)
    if names and (reason := everywhere_reason(sources)) is not None:
        yield (
            f"security rule {', '.join(names)} allows SSH (22) from everywhere ({reason}); "
            "list the networks that need it"
        )


def _nsg_of(resource_type: str, props: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Which NSG a resource's rules belong to, when the properties say so; None otherwise."""
    group = props.get("resourceGroupName")
    if resource_type == "azure-native:network:NetworkSecurityGroup":
        name = props.get("networkSecurityGroupName") or props.get("name")
    elif resource_type == "azure-native:network:SecurityRule":
        name = props.get("networkSecurityGroupName")
    elif _generic(resource_type, props, "Microsoft.Network", "networkSecurityGroups"):
        name = props.get("resourceName")
    elif _generic(resource_type, props, "Microsoft.Network", "securityRules"):
        name = str(props.get("parentResourcePath") or "").rpartition("/")[2]
    else:
        return None
    if not isinstance(group, str) or not isinstance(name, str) or not group or not name:
        return None  # unknown during preview: judged per resource only
    # Typed and generic (Hub) declarations live in different clouds: never one NSG.
    kind = "typed" if resource_type.startswith("azure-native:network:") else "generic"
    return (kind, group.lower(), name.lower())


def no_ssh_from_everywhere_across_resources(resources: list[tuple[str, Mapping[str, Any]]]) -> Iterator[str]:
    """The same coverage rule over an NSG and its separately declared rules taken together.

    Only what no single resource shows: one that opens SSH to everywhere alone is reported by
    no-ssh-from-everywhere already.
    """
    groups: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for resource_type, props in resources:
        key = _nsg_of(resource_type, props)
        if key is None or next(no_ssh_from_everywhere(resource_type, props), None) is not None:
            continue
        names, sources = groups.setdefault(key, ([], []))
        for name, rule in _security_rules(resource_type, props):
            if _allows_ssh_in(rule):
                names.append(name)
                sources += _sources(rule)
    for (_, group, nsg), (names, sources) in groups.items():
        if names and (reason := everywhere_reason(sources)) is not None:
            yield (
                f"security rules {', '.join(names)} of NSG {nsg} ({group}) together allow SSH (22) from "
                f"everywhere ({reason}); list the networks that need it"
            )


# --- VMs -----------------------------------------------------------------------------------------


def vm_password_authentication_disabled(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if resource_type == "azure-native:compute:VirtualMachine":
        os_profile = props.get("osProfile") or {}
    elif _generic(resource_type, props, "Microsoft.Compute", "virtualMachines"):
        # A HubArmResource keeps custom data and any password in its (secret) secretProperties;
        # `properties` itself may arrive as one secret when a secret Output runs through it.
        secret = _plain(props.get("secretProperties")) or {}
        plain = _plain(props.get("properties")) or {}
        os_profile = {**(plain.get("osProfile") or {}), **(secret.get("osProfile") or {})}
    else:
        return
    if os_profile.get("adminPassword"):
        yield "the VM has an admin password; use SSH keys only"
    linux = os_profile.get("linuxConfiguration")
    if linux is not None and linux.get("disablePasswordAuthentication") is not True:
        yield "linuxConfiguration.disablePasswordAuthentication must be true"


# --- storage, registry, key vault, workspace -----------------------------------------------------------


def storage_secure(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if resource_type == "azure-native:storage:StorageAccount":
        if props.get("enableHttpsTrafficOnly") is not True:
            yield "enableHttpsTrafficOnly must be true"
        if props.get("minimumTlsVersion") != "TLS1_2":
            yield "minimumTlsVersion must be TLS1_2"
        if props.get("allowBlobPublicAccess") is not False:
            yield "allowBlobPublicAccess must be false"
    elif _generic(resource_type, props, "Microsoft.Storage", "storageAccounts"):
        if (_plain(props.get("properties")) or {}).get("supportsHttpsTrafficOnly") is not True:
            yield "supportsHttpsTrafficOnly must be true"
    elif _generic(resource_type, props, "Microsoft.Storage", "containers") or resource_type == (
        "azure-native:storage:BlobContainer"
    ):
        access = (_plain(props.get("properties")) or {}).get("publicAccess", props.get("publicAccess", "None"))
        if access not in (None, "None"):
            yield f"blob container public access is {access}; it must be None"


def registry_locked_down(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if resource_type != "azure-native:containerregistry:Registry":
        return
    if props.get("adminUserEnabled") is not False:
        yield "adminUserEnabled must be false (use tokens or identities)"
    if props.get("anonymousPullEnabled") is True:
        yield "anonymousPullEnabled must be false"


def key_vault_purge_protection(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if (
        resource_type == "azure-native:keyvault:Vault"
        and (_plain(props.get("properties")) or {}).get("enablePurgeProtection") is not True
    ):
        yield "properties.enablePurgeProtection must be true"


def workspace_uses_our_registry(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if resource_type == "azure-native:machinelearningservices:Workspace" and not props.get("containerRegistry"):
        yield "containerRegistry must name our registry: the one Azure ML creates itself has the admin user on"


def hub_api_versions(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if resource_type not in GENERIC:
        return
    namespace, version = props.get("resourceProviderNamespace"), props.get("apiVersion")
    if (stable := CLOUD_GENERIC_API_VERSIONS.get(str(namespace))) is not None:
        if version != stable:
            yield f"{namespace} at {version}; the stable version declared is {stable}"
        return
    expected = HUB_API_VERSIONS.get(str(namespace))
    if expected is None:
        yield f"{namespace} is not in Azure Stack Hub profile 2020-09-01-hybrid"
    elif version != expected:
        yield f"{namespace} at {version}; the Hub profile 2020-09-01-hybrid has {expected}"


def _secret_names_in_plain_text(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, Secret):
        return
    if isinstance(value, Mapping):
        for key, child in value.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).lower() in SECRET_NAMES and _plain(child) not in (None, "") and not isinstance(child, Secret):
                yield where
            else:
                yield from _secret_names_in_plain_text(child, where)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _secret_names_in_plain_text(child, f"{path}[{index}]")


def no_plaintext_secrets(_resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    for where in _secret_names_in_plain_text(props, ""):
        yield f"{where} holds a secret in plain text; pass it as a Pulumi secret"


def public_network_access_noted(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if (
        resource_type
        in (
            "azure-native:machinelearningservices:Workspace",
            "azure-native:containerregistry:Registry",
        )
        and props.get("publicNetworkAccess", "Enabled") == "Enabled"
    ):
        yield "reachable from the internet (a documented opt-out in this project; prefer private endpoints)"


def _policy(name: str, description: str, check: Check, level: EnforcementLevel) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, _raw(args.props)):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level)


def _stack_validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [(r.resource_type, _raw(r.props)) for r in args.resources]
    for message in no_ssh_from_everywhere_across_resources(resources):
        report_violation(message, None)


MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY

POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _policy("no-ssh-from-everywhere", "No NSG rule allows SSH from everywhere (typed or Hub).",
            no_ssh_from_everywhere, MANDATORY),
    _policy("vm-password-authentication-disabled", "VMs take SSH keys only.",
            vm_password_authentication_disabled, MANDATORY),
    _policy("storage-secure", "Storage: https only, TLS 1.2, no public blob access.", storage_secure, MANDATORY),
    _policy("registry-locked-down", "Registries: no admin user, no anonymous pull.", registry_locked_down, MANDATORY),
    _policy("key-vault-purge-protection", "Key vaults have purge protection.", key_vault_purge_protection, MANDATORY),
    _policy("workspace-uses-our-registry", "The Azure ML workspace names its registry.",
            workspace_uses_our_registry, MANDATORY),
    _policy("hub-api-versions", "Generic (Hub) resources only at Hub-profile API versions.",
            hub_api_versions, MANDATORY),
    _policy("no-plaintext-secrets", "Secret-named properties are Pulumi secrets.", no_plaintext_secrets, MANDATORY),
    StackValidationPolicy(name="no-ssh-from-everywhere-across-rules",
                          description="No NSG with its separately declared rules allows SSH from everywhere.",
                          validate=_stack_validate, enforcement_level=MANDATORY),
    _policy("public-network-access-noted", "Workspace and registry public network access (advisory).",
            public_network_access_noted, ADVISORY),
]  # fmt: skip
