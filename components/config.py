"""All stack configuration, read once, validated up front, into frozen dataclasses.

`Pulumi.yaml` is the schema: which keys exist, their types, defaults and which are secret. This
module adds what the schema cannot say (Azure naming rules, CIDRs, key formats, VM size families)
and reports every problem in one `ConfigError` before a single resource is declared.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from clients import ssh_keys
from clients.trust import CaCertificatesError, parse_ca_certificates
from components import naming
from edge.real_edge import EdgeNetwork, no_proxy_problem, proxy_problem
from policy.address_space import everywhere_reason as ssh_everywhere_reason
from policy.address_space import parse_source

if TYPE_CHECKING:
    from edge.k3s_releases import K3sRelease

PROJECT = "edge-training"
PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
REGIONS_FILE = Path(__file__).resolve().parent.parent / "clients" / "azure_regions.txt"

# Azure Stack Hub's VM size families (Microsoft Learn, "VM sizes supported in Azure Stack Hub",
# GPU sizes from its "GPU optimized" section and "Graphics processing unit (GPU) VM on Azure
# Stack Hub": NCv3 Standard_NC6s_v3..NC24s_v3, NVv4 Standard_NV4as_v4..NV32as_v4). Anything else,
# first-generation N-series or Dv3 say, fails only at deployment, so catch it here.
HUB_VM_SIZE_FAMILIES: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        "A": re.compile(r"Standard_A\d+"),
        "Av2": re.compile(r"Standard_A\d+m?_v2"),
        "D": re.compile(r"Standard_D\d+"),
        "Dv2": re.compile(r"Standard_D\d+_v2"),
        "DS": re.compile(r"Standard_DS\d+"),
        "DSv2": re.compile(r"Standard_DS\d+_v2"),
        "F": re.compile(r"Standard_F\d+"),
        "Fs": re.compile(r"Standard_F\d+s"),
        "Fsv2": re.compile(r"Standard_F\d+s_v2"),
        "NCv3": re.compile(r"Standard_NC(6|12|24)s_v3"),
        "NVv4": re.compile(r"Standard_NV(4|8|16|32)as_v4"),
    }
)
IDENTITY_PROVIDERS = ("azuread", "adfs")
BOOTSTRAPS = ("cloud-init", "custom-script")
REGISTRY_SKUS = ("Basic", "Standard", "Premium")
MIN_RSA_BITS = ssh_keys.MIN_RSA_BITS
BASE_TAG_KEYS = ("project", "stack", "managed-by")

# Microsoft Learn, "Use tags to organize your Azure resources and management hierarchy",
# Limitations: at most 50 tag name/value pairs per resource; names up to 512 characters, values
# up to 256, but storage accounts take names up to 128 only, and every resource here (storage
# accounts included) gets the same tags, so 128 it is; names can't contain < > % & \ ? /; names
# are case-insensitive for operations, so two names differing only in case are one tag.
MAX_TAGS = 50
MAX_TAG_NAME = 128
MAX_TAG_VALUE = 256
# Microsoft Learn, "Azure Virtual Network FAQ": "The smallest supported IPv4 subnet is /29, and the
# largest is /2"; "IPv6 subnets must be exactly /64 in size"; Azure reserves five addresses in
# each subnet (network, gateway, two for DNS, broadcast), so a /29 leaves three for VMs.
MIN_IPV4_SUBNET_PREFIX, MAX_IPV4_SUBNET_PREFIX = 2, 29
IPV6_SUBNET_PREFIX = 64
# Same FAQ, "What address ranges can I use in my virtual networks?": these cannot be used.
VNET_FORBIDDEN_RANGES = tuple(
    ipaddress.ip_network(n)
    for n in ("224.0.0.0/4", "255.255.255.255/32", "127.0.0.0/8", "169.254.0.0/16", "168.63.129.16/32")
)

_REGION = re.compile(r"[a-z][a-z0-9]*")
_HOSTNAME_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")
_IMAGE_VERSION = re.compile(r"latest|\d+\.\d+\.\d+")
_VM_RESOURCE_ID = re.compile(
    r"/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w.()]+/providers/"
    r"Microsoft\.Compute/virtualMachines/[-\w.]+",
    re.IGNORECASE,
)
_TAG_KEY_FORBIDDEN = set("<>%&\\?/")


@dataclass(frozen=True)
class Problem:
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{PROJECT}:{self.key}: {self.reason}"


class ConfigError(ValueError):
    """Every problem with the stack configuration, each naming its key."""

    def __init__(self, problems: Collection[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration ({len(self.problems)} problem(s)):\n{lines}")

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(p.key for p in self.problems)


@dataclass(frozen=True)
class AzureSettings:
    location: str
    subscription_id: str | None
    resource_group_name: str | None
    """An existing resource group, or None to create one named `created_resource_group_name`."""
    created_resource_group_name: str
    workspace_name: str
    workspace_storage_account_name: str
    registry_name: str
    registry_sku: str
    key_vault_name: str
    """Derived, not configurable: 3-24 letters, digits, hyphens; globally unique."""
    workspace_public_network_access: bool
    registry_public_network_access: bool


@dataclass(frozen=True)
class MarketplaceImage:
    publisher: str
    offer: str
    sku: str
    version: str


@dataclass(frozen=True)
class HubSettings:
    arm_endpoint: str
    location: str
    subscription_id: str
    tenant_id: str | None
    identity_provider: str
    resource_group_name: str
    storage_account_name: str
    data_container_name: str
    vm_size: str
    image: MarketplaceImage
    admin_username: str
    ssh_public_key: str
    ssh_source_cidrs: tuple[str, ...]
    allow_ssh_from_anywhere: bool
    vnet_address_space: str
    subnet_prefix: str
    os_disk_size_gb: int
    docker_version: str
    bootstrap: str
    ca_certificates: str = ""
    """hubCaCertificates: the Hub's CA certificates (PEM), checked; empty when public roots do."""
    edge_network: EdgeNetwork = field(default_factory=EdgeNetwork)
    """The VM's CAs and proxy (edgeHttpProxy, edgeHttpsProxy, edgeNoProxy, edgeProxyCaCertificate)."""

    @property
    def metadata_host(self) -> str:
        """The host the azure-native provider asks for the Hub's endpoints (metadataHost)."""
        return urlsplit(self.arm_endpoint).hostname or ""

    @property
    def uses_adfs(self) -> bool:
        return self.identity_provider == "adfs"


@dataclass(frozen=True)
class AttachSettings:
    compute_name: str
    ssh_port: int
    ssh_private_key: str = field(repr=False)
    ssh_host_key_fingerprint: str | None
    deadline_seconds: int
    min_free_disk_gb: int
    compute_resource_id: str | None
    experiment_name: str


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    tags: Mapping[str, str]
    azure: AzureSettings
    hub: HubSettings
    attach: AttachSettings
    edge: EdgeComputeSettings
    day_two: DayTwoSettings | None = None
    """Versions and rotations of the Kubernetes mode (issue 23); always set by `parse`."""


@dataclass(frozen=True)
class KeySpec:
    type: str
    default: Any
    has_default: bool
    secret: bool


@cache
def load_schema(path: Path = PROJECT_FILE) -> Mapping[str, KeySpec]:
    """The config keys `Pulumi.yaml` declares."""
    declared = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return MappingProxyType(
        {
            key: KeySpec(
                type=spec["type"],
                default=spec.get("default"),
                has_default="default" in spec,
                secret=bool(spec.get("secret", False)),
            )
            for key, spec in declared.items()
        }
    )


def _blank(value: Any) -> bool:
    # Strings only: an empty list is judged by the key's own rule (hubSshSourceCidrs says why).
    return isinstance(value, str) and not value.strip()


@cache
def azure_regions(path: Path = REGIONS_FILE) -> frozenset[str]:
    """Azure's public region names, from the list shipped with the project."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line)


class _Reader:
    """Typed access to raw config values that collects problems instead of raising."""

    def __init__(self, raw: Mapping[str, Any], schema: Mapping[str, KeySpec], secret_keys: Collection[str]) -> None:
        self._raw = raw
        self._schema = schema
        self._secret_keys = secret_keys
        self.problems: list[Problem] = []
        self.read: set[str] = set()

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(Problem(key, reason))

    def _value(self, key: str, expected_type: str) -> Any:
        spec = self._schema[key]
        if spec.type != expected_type:
            raise TypeError(f"Pulumi.yaml declares {key} as {spec.type}, the program reads {expected_type}")
        self.read.add(key)
        value = self._raw.get(key)
        # A key without a default is required, and required means non-empty: "" or blanks set
        # nothing, and would otherwise flow into every resource as an empty name or id.
        if value is not None and not (not spec.has_default and _blank(value)):
            return value
        if not spec.has_default:
            how = "--secret " if spec.secret else ""
            state = "is empty" if value is not None else "is not set"
            self.problem(key, f"required and {state}; set it with: pulumi config set {how}{key} <value>")
        return spec.default

    def shown(self, key: str, value: Any) -> str:
        """`value` for an error message: a secret key's value is never repeated."""
        return "a secret value" if self._schema[key].secret or key in self._secret_keys else repr(value)

    def string(self, key: str) -> str:
        value = self._value(key, "string")
        if value is None:
            return ""
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {self.shown(key, value)}")
            return ""
        return value.strip()

    def optional_string(self, key: str) -> str | None:
        return self.string(key) or None

    def boolean(self, key: str) -> bool:
        value = self._value(key, "boolean")
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(key, f"must be true or false, got {self.shown(key, value)}")
        return False

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._value(key, "integer")
        try:
            number = int(value)
            if isinstance(value, bool) or str(number) != str(value).strip():
                raise ValueError
        except (TypeError, ValueError):
            self.problem(key, f"must be a whole number, got {self.shown(key, value)}")
            return low
        if not low <= number <= high:
            self.problem(key, f"must be between {low} and {high}, got {number}")
        return number

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._value(key, "array")
        if isinstance(value, str):
            # The Pulumi runtime hands arrays over as JSON text.
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                self.problem(key, f"must be a list of strings, got {self.shown(key, value)}")
                return ()
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problem(key, f"must be a list of strings, got {self.shown(key, value)}")
            return ()
        return tuple(item.strip() for item in value)

    def has_problem(self, key: str) -> bool:
        return any(p.key == key for p in self.problems)

    def is_secret(self, key: str) -> bool:
        return key in self._secret_keys

    def check_name(self, key: str, value: str, rule: naming.NameRule) -> None:
        if (reason := rule.problem(value)) is not None:
            self.problem(key, reason)

    def check_uuid(self, key: str, value: str | None) -> None:
        if value is None:
            return
        try:
            uuid.UUID(value)
        except ValueError:
            self.problem(key, f"{value!r} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")

    def check_region(self, key: str, value: str) -> None:
        if not _REGION.fullmatch(value):
            self.problem(
                key, f"{value!r} is not a region name: use the lowercase name (westeurope), not the display name"
            )

    def check_azure_region(self, key: str, value: str) -> None:
        """A public Azure region from the list the project ships, with a suggestion when it is not."""
        regions = azure_regions()
        if value in regions:
            return
        squashed = re.sub(r"[\s_-]", "", value.lower())
        close = [squashed] if squashed in regions else difflib.get_close_matches(squashed, sorted(regions), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        self.problem(key, f"{value!r} is not an Azure region name{hint} (list: clients/azure_regions.txt)")


def parse(
    raw: Mapping[str, Any],
    *,
    stack: str,
    project: str = PROJECT,
    organization: str = "",
    secret_keys: Collection[str] = (),
    schema: Mapping[str, KeySpec] | None = None,
) -> StackConfig:
    """Validate raw config values (keys without the project prefix) into a `StackConfig`.

    Raises `ConfigError` listing every problem found, each naming its key.
    """
    schema = load_schema() if schema is None else schema
    r = _Reader(raw, schema, secret_keys)
    seed = f"{organization}/{project}/{stack}"

    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            r.problem(key, f"unknown config key{hint}")

    tags = _tags(r, project, stack)
    azure = _azure(r, project, stack, seed)
    hub = _hub(r, stack, seed)
    # Match the private key against the public one only when that one is valid: one cause, one problem.
    attach = _attach(r, "" if r.has_problem("hubSshPublicKey") else hub.ssh_public_key)
    edge = _edge_compute(r, hub, attach)
    hub = replace(hub, vm_size=edge.vm_size)
    day_two = _day_two(r)

    unread = set(schema) - r.read
    if unread:
        raise TypeError(f"Pulumi.yaml declares keys the program never reads: {sorted(unread)}")
    if r.problems:
        raise ConfigError(r.problems)
    return StackConfig(
        project=project, stack=stack, tags=tags, azure=azure, hub=hub, attach=attach, edge=edge, day_two=day_two
    )


def from_pulumi() -> StackConfig:
    """Read and validate the running stack's configuration."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    project = pulumi.get_project()
    prefix = f"{project}:"
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw = {k[len(prefix) :]: v for k, v in everything.items() if k.startswith(prefix)}
    env_secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret = {
        k
        for k in raw.keys() | set(load_schema())
        if runtime_config.is_config_secret(prefix + k) or prefix + k in env_secret_keys
    }
    return parse(
        raw,
        stack=pulumi.get_stack(),
        project=project,
        organization=pulumi.get_organization() or "",
        secret_keys=secret,
    )


def _tags(r: _Reader, project: str, stack: str) -> Mapping[str, str]:
    tags = {"project": project, "stack": stack, "managed-by": "pulumi"}
    seen = {key.lower(): key for key in tags}
    for item in r.strings("tags"):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            r.problem("tags", f"{item!r} is not key=value")
        elif key.lower() in BASE_TAG_KEYS:
            r.problem("tags", f"{key!r} is set by the program; choose another tag name")
        elif key.lower() in seen:
            r.problem("tags", f"{key!r} repeats tag {seen[key.lower()]!r}: Azure tag names ignore case")
        elif len(key) > MAX_TAG_NAME:
            r.problem("tags", f"tag name {key[:20]!r}... has {len(key)} characters; at most {MAX_TAG_NAME}")
        elif forbidden := sorted(_TAG_KEY_FORBIDDEN & set(key)):
            r.problem("tags", f"tag name {key!r} contains {' '.join(forbidden)}; Azure refuses < > % & \\ ? /")
        elif len(value) > MAX_TAG_VALUE:
            r.problem("tags", f"tag {key!r} has a value of {len(value)} characters; at most {MAX_TAG_VALUE}")
        else:
            seen[key.lower()] = key
            tags[key] = value
    if len(tags) > MAX_TAGS:
        r.problem(
            "tags",
            f"{len(tags)} tags with the {len(BASE_TAG_KEYS)} the program sets; Azure allows {MAX_TAGS} per resource",
        )
    return MappingProxyType(tags)


def _azure(r: _Reader, project: str, stack: str, seed: str) -> AzureSettings:
    location = r.string("location")
    r.check_azure_region("location", location)
    subscription_id = r.optional_string("subscriptionId")
    r.check_uuid("subscriptionId", subscription_id)
    resource_group = r.optional_string("resourceGroupName")
    if resource_group is not None:
        r.check_name("resourceGroupName", resource_group, naming.RESOURCE_GROUP)

    workspace = r.string("workspaceName") or naming.workspace_name(stack)
    r.check_name("workspaceName", workspace, naming.ML_WORKSPACE)
    storage = r.string("workspaceStorageAccountName") or naming.globally_unique_name(
        "stmlw", stack, seed + "/workspace-storage", 24
    )
    r.check_name("workspaceStorageAccountName", storage, naming.STORAGE_ACCOUNT)
    registry = r.string("registryName") or naming.globally_unique_name("cr", stack, seed + "/registry", 50)
    r.check_name("registryName", registry, naming.CONTAINER_REGISTRY)

    sku = r.string("registrySku")
    if sku not in REGISTRY_SKUS:
        r.problem("registrySku", f"{sku!r} is not one of {', '.join(REGISTRY_SKUS)}")
    workspace_public = r.boolean("workspacePublicNetworkAccess")
    registry_public = r.boolean("registryPublicNetworkAccess")
    if not registry_public and sku in REGISTRY_SKUS and sku != "Premium":
        r.problem(
            "registryPublicNetworkAccess",
            f"false needs registrySku Premium (is {sku}): only Premium registries take private endpoints",
        )
    return AzureSettings(
        location=location,
        subscription_id=subscription_id,
        resource_group_name=resource_group,
        created_resource_group_name=naming.resource_group_name(project, stack),
        workspace_name=workspace,
        workspace_storage_account_name=storage,
        registry_name=registry,
        registry_sku=sku,
        key_vault_name=naming.globally_unique_name("kv", stack, seed + "/key-vault", 24),
        workspace_public_network_access=workspace_public,
        registry_public_network_access=registry_public,
    )


def _hub(r: _Reader, stack: str, seed: str) -> HubSettings:
    endpoint = r.string("hubArmEndpoint")
    if endpoint and (reason := _endpoint_problem(endpoint)) is not None:
        r.problem("hubArmEndpoint", reason)
    endpoint = endpoint.rstrip("/")
    location = r.string("hubLocation")
    r.check_region("hubLocation", location)
    subscription_id = r.string("hubSubscriptionId")
    if subscription_id:
        r.check_uuid("hubSubscriptionId", subscription_id)

    identity_provider = r.string("hubIdentityProvider").lower()
    tenant_id = r.optional_string("hubTenantId")
    if identity_provider not in IDENTITY_PROVIDERS:
        r.problem("hubIdentityProvider", f"{identity_provider!r} is not one of {', '.join(IDENTITY_PROVIDERS)}")
    elif identity_provider == "azuread" and tenant_id is None:
        r.problem("hubTenantId", "required with hubIdentityProvider azuread: the directory id the Hub trusts")
    elif identity_provider == "adfs" and tenant_id not in (None, "adfs"):
        r.problem("hubTenantId", "leave it empty with hubIdentityProvider adfs: AD FS Hubs use the tenant 'adfs'")
    if identity_provider == "azuread" and tenant_id is not None:
        r.check_uuid("hubTenantId", tenant_id)

    resource_group = r.string("hubResourceGroupName")
    if resource_group:
        r.check_name("hubResourceGroupName", resource_group, naming.RESOURCE_GROUP)
    storage = r.string("hubStorageAccountName") or naming.globally_unique_name(
        "sthub", stack, seed + "/hub-storage", 24
    )
    r.check_name("hubStorageAccountName", storage, naming.STORAGE_ACCOUNT)
    container = r.string("hubDataContainerName")
    r.check_name("hubDataContainerName", container, naming.BLOB_CONTAINER)

    vm_size = r.string("hubVmSize")  # empty: chosen per edgeComputeMode in _edge_compute
    if vm_size and not any(p.fullmatch(vm_size) for p in HUB_VM_SIZE_FAMILIES.values()):
        families = ", ".join(HUB_VM_SIZE_FAMILIES)
        r.problem("hubVmSize", f"{vm_size!r} is not in a size family Azure Stack Hub offers ({families})")

    image = MarketplaceImage(
        publisher=r.string("hubImagePublisher"),
        offer=r.string("hubImageOffer"),
        sku=r.string("hubImageSku"),
        version=r.string("hubImageVersion"),
    )
    for key, value in (("hubImagePublisher", image.publisher), ("hubImageOffer", image.offer)):
        if not value:
            r.problem(key, "must not be empty")
    if not image.sku:
        r.problem("hubImageSku", "must not be empty")
    elif re.search(r"gen2$", image.sku, re.IGNORECASE):
        r.problem("hubImageSku", f"{image.sku!r} is a generation 2 image; Azure Stack Hub runs generation 1 only")
    if not _IMAGE_VERSION.fullmatch(image.version):
        r.problem("hubImageVersion", f"{image.version!r} is neither 'latest' nor a version like 22.04.202411010")

    admin = r.string("hubAdminUsername")
    r.check_name("hubAdminUsername", admin, naming.LINUX_ADMIN)
    if admin in naming.RESERVED_ADMIN_NAMES:
        r.problem("hubAdminUsername", f"{admin!r} is a name Azure reserves; choose another")

    public_key = r.string("hubSshPublicKey")
    if public_key:
        try:
            ssh_keys.parse_public_key(public_key)
        except ssh_keys.KeyFormatError as error:
            r.problem("hubSshPublicKey", str(error))

    cidrs, allow_anywhere = _ssh_sources(r)
    vnet = _network(r, "hubVnetAddressSpace")
    subnet = _network(r, "hubSubnetPrefix")
    if vnet is not None:
        for forbidden in VNET_FORBIDDEN_RANGES:
            if forbidden.version == vnet.version and vnet.overlaps(forbidden):  # type: ignore[arg-type]
                r.problem("hubVnetAddressSpace", f"{vnet} overlaps {forbidden}, which Azure keeps out of networks")
                break
    if subnet is not None:
        if subnet.version == 4 and not MIN_IPV4_SUBNET_PREFIX <= subnet.prefixlen <= MAX_IPV4_SUBNET_PREFIX:
            r.problem(
                "hubSubnetPrefix",
                f"{subnet} is outside /{MIN_IPV4_SUBNET_PREFIX}../{MAX_IPV4_SUBNET_PREFIX}: Azure reserves 5 "
                f"addresses per subnet, so /{MAX_IPV4_SUBNET_PREFIX} (3 usable) is the smallest subnet",
            )
        elif subnet.version == 6 and subnet.prefixlen != IPV6_SUBNET_PREFIX:
            r.problem("hubSubnetPrefix", f"{subnet}: Azure's IPv6 subnets are exactly /{IPV6_SUBNET_PREFIX}")
    if (
        vnet is not None
        and subnet is not None
        and not (
            subnet.version == vnet.version and subnet.subnet_of(vnet)  # type: ignore[arg-type]
        )
    ):
        r.problem("hubSubnetPrefix", f"{subnet} is not inside hubVnetAddressSpace {vnet}")

    docker_version = r.string("hubDockerVersion")
    if not re.fullmatch(r"\d+\.\d+\.\d+", docker_version):
        r.problem("hubDockerVersion", f"{docker_version!r} is not a Docker Engine version like 27.5.1")
    bootstrap = r.string("hubBootstrap")
    if bootstrap not in BOOTSTRAPS:
        r.problem("hubBootstrap", f"{bootstrap!r} is not one of {', '.join(BOOTSTRAPS)}")

    return HubSettings(
        arm_endpoint=endpoint,
        location=location,
        subscription_id=subscription_id,
        tenant_id=tenant_id,
        identity_provider=identity_provider,
        resource_group_name=resource_group,
        storage_account_name=storage,
        data_container_name=container,
        vm_size=vm_size,
        image=image,
        admin_username=admin,
        ssh_public_key=public_key,
        ssh_source_cidrs=cidrs,
        allow_ssh_from_anywhere=allow_anywhere,
        vnet_address_space=str(vnet) if vnet else "",
        subnet_prefix=str(subnet) if subnet else "",
        os_disk_size_gb=r.integer("hubOsDiskSizeGb", 30, 1023),
        docker_version=docker_version,
        bootstrap=bootstrap,
        ca_certificates=_hub_ca_certificates(r),
        edge_network=_edge_network(r, endpoint, str(vnet) if vnet else ""),
    )


# --- the real edge: the Hub's own CA ----------------------------------------------------------


def _hub_ca_certificates(r: _Reader) -> str:
    """hubCaCertificates: CA certificates only (clients/trust.py says what is checked)."""
    pem = r.string("hubCaCertificates")
    if pem:
        try:
            parse_ca_certificates(pem)
        except CaCertificatesError as error:
            r.problem("hubCaCertificates", str(error))
    return pem


def _edge_network(r: _Reader, arm_endpoint: str, vnet: str) -> EdgeNetwork:
    """The proxy the VM goes out through, and what it always reaches directly: besides the
    cluster's own (edge/real_edge.py ALWAYS_DIRECT), the Hub's endpoints (the domain of
    hubArmEndpoint, which its blob and AD FS endpoints share) and the VNet."""
    proxies = {}
    for key in ("edgeHttpProxy", "edgeHttpsProxy"):
        url = r.string(key)
        if url and (reason := proxy_problem(url)) is not None:
            r.problem(key, reason)  # the reason never repeats a password in the URL
        elif "@" in urlsplit(url).netloc and not r.is_secret(key):
            r.problem(key, f"carries a user and password in plain text; set it with: pulumi config set --secret {key}")
        proxies[key] = url
    direct: list[str] = []
    host = urlsplit(arm_endpoint).hostname or ""
    if host:
        try:
            ipaddress.ip_address(host)
            direct.append(host)
        except ValueError:
            direct.append("." + host.split(".", 1)[1] if "." in host else host)
    if vnet:
        direct.append(vnet)
    for entry in r.strings("edgeNoProxy"):
        if (reason := no_proxy_problem(entry)) is not None:
            r.problem("edgeNoProxy", reason)
        direct.append(entry)
    proxy_ca = r.string("edgeProxyCaCertificate")
    if proxy_ca:
        try:
            parse_ca_certificates(proxy_ca)
        except CaCertificatesError as error:
            r.problem("edgeProxyCaCertificate", str(error))
        if not (proxies["edgeHttpProxy"] or proxies["edgeHttpsProxy"]):
            r.problem("edgeProxyCaCertificate", "is set without edgeHttpProxy or edgeHttpsProxy")
    return EdgeNetwork(
        hub_ca_pem=r.string("hubCaCertificates"),
        http_proxy=proxies["edgeHttpProxy"],
        https_proxy=proxies["edgeHttpsProxy"],
        no_proxy=tuple(dict.fromkeys(direct)),
        proxy_ca_pem=proxy_ca,
    )


def _endpoint_problem(endpoint: str) -> str | None:
    """Why `endpoint` is not a bare https endpoint; the reason never repeats credentials in it."""
    parts = urlsplit(endpoint)
    if "@" in parts.netloc:
        # Say so without echoing the URL: what precedes the @ may be a password.
        return "must not carry a user name or password (user:password@); credentials come from the environment"
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in endpoint):
        return f"{endpoint!r} is not an https URL"
    try:
        port = parts.port
    except ValueError:
        return f"{endpoint!r} has a port that is not a number from 1 to 65535"
    if port == 0:
        return f"{endpoint!r} has port 0; use a port from 1 to 65535"
    host = parts.hostname
    if not host.startswith("[") and ":" not in host:  # a name or an IPv4 address (IPv6 comes in [ ])
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
            return f"{endpoint!r} does not have a valid host name"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{endpoint!r} must be the endpoint alone, without a path or query"
    return None


def _ssh_sources(r: _Reader) -> tuple[tuple[str, ...], bool]:
    sources = r.strings("hubSshSourceCidrs")
    allow_anywhere = r.boolean("hubAllowSshFromAnywhere")
    normalized: list[str] = []
    for source in sources:
        # Normalised first (0::/0 is ::/0, 0.0.0.0/0.0.0.0 is 0.0.0.0/0), then judged below.
        try:
            text = parse_source(source, strict=True).text
        except ValueError as error:
            r.problem("hubSshSourceCidrs", f"{source!r} is not a CIDR ({error})")
            continue
        if text not in normalized:
            normalized.append(text)
    # Judged by coverage, with the policy pack's own function: split ranges count as their union.
    reason = ssh_everywhere_reason(sources)
    if reason is not None and not allow_anywhere:
        r.problem(
            "hubSshSourceCidrs",
            f"opens SSH to everywhere ({reason}); list your networks, "
            "or set hubAllowSshFromAnywhere true to accept that on purpose",
        )
    return tuple(normalized), allow_anywhere


def _network(r: _Reader, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    value = r.string(key)
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        r.problem(key, f"{value!r} is not a CIDR ({error})")
        return None


def _attach(r: _Reader, public_key: str) -> AttachSettings:
    compute_name = r.string("computeName")
    r.check_name("computeName", compute_name, naming.ML_COMPUTE)
    private_key = r.string("sshPrivateKey")
    if private_key:
        if not r.is_secret("sshPrivateKey"):
            r.problem(
                "sshPrivateKey",
                "is stored in plain text; set it again with: pulumi config set --secret sshPrivateKey < keyfile",
            )
        # Whatever format it came in, the rest of the program sees the one Azure ML takes.
        private_key = _azure_ml_private_key(r, private_key, public_key)
    fingerprint = r.optional_string("sshHostKeyFingerprint")
    if fingerprint is not None and not _FINGERPRINT.fullmatch(fingerprint):
        r.problem(
            "sshHostKeyFingerprint",
            f"{fingerprint!r} is not a SHA256 fingerprint as ssh-keygen -lf prints it (SHA256:...)",
        )
    resource_id = r.optional_string("computeResourceId")
    if resource_id is not None and not _VM_RESOURCE_ID.fullmatch(resource_id):
        r.problem(
            "computeResourceId",
            f"{resource_id!r} is not a VM resource id "
            "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>)",
        )
    experiment = r.string("experimentName")
    r.check_name("experimentName", experiment, naming.EXPERIMENT)
    return AttachSettings(
        compute_name=compute_name,
        ssh_port=r.integer("sshPort", 1, 65535),
        ssh_private_key=private_key,
        ssh_host_key_fingerprint=fingerprint,
        deadline_seconds=r.integer("attachDeadlineSeconds", 30, 7200),
        min_free_disk_gb=r.integer("minFreeDiskGb", 0, 4096),
        compute_resource_id=resource_id,
        experiment_name=experiment,
    )


def _azure_ml_private_key(r: _Reader, text: str, public_key: str) -> str:
    try:
        key = ssh_keys.parse_private_key(text)
    except ssh_keys.KeyFormatError as error:
        r.problem("sshPrivateKey", str(error))
        return ""
    if public_key and not ssh_keys.same_key(key, ssh_keys.parse_public_key(public_key)):
        r.problem("sshPrivateKey", "does not match hubSshPublicKey: the VM would refuse it")
    return ssh_keys.azure_ml_pem(key)


# --- Edge compute mode (issue 13): Kubernetes on the Hub VM, or today's VirtualMachine attach ---

EDGE_COMPUTE_MODES = ("kubernetes", "virtual-machine")
KUBERNETES_DEFAULT_VM_SIZE = "Standard_DS3_v2"
VIRTUAL_MACHINE_DEFAULT_VM_SIZE = "Standard_DS2_v2"
INSTANCE_TYPE_NAME = "edge-training"
MAX_HUB_AGENTS = 10
# The smallest node Microsoft documents for the Azure ML extension with training only: "For Test,
# Enabled Training: 1 Node, 2 vCPU, 7 GiB Memory (DS2v2)" (MicrosoftDocs/azure-ai-docs,
# articles/machine-learning/reference-kubernetes.md, "Recommended resource planning").
EXTENSION_MIN_VCPUS = 2
EXTENSION_MIN_MEMORY_GIB = 7.0
# What runs before any job and is requested from the same node: the extension's training
# components (410m CPU / 1492 Mi requested, same table), the Arc agents (>= 850 MB, Azure Arc
# system-requirements.md) and the K3s server (~1.6 GB, docs.k3s.io resource profiling): about
# 4 GiB and one core, so a job's instance type must fit in what is left.
SYSTEM_RESERVED_MEMORY_GIB = 4.0
SYSTEM_RESERVED_VCPUS = 1.0

# vCPUs and memory (GiB) of the sizes Azure Stack Hub offers (Microsoft Learn, "VM sizes
# supported in Azure Stack Hub"); the Kubernetes mode needs them to check the node's capacity.
HUB_VM_SIZES: Mapping[str, tuple[int, float]] = MappingProxyType(
    {
        **{
            f"Standard_A{n}": c
            for n, c in {
                0: (1, 0.768),
                1: (1, 1.75),
                2: (2, 3.5),
                3: (4, 7.0),
                4: (8, 14.0),
                5: (2, 14.0),
                6: (4, 28.0),
                7: (8, 56.0),
            }.items()
        },
        **{f"Standard_A{n}_v2": c for n, c in {1: (1, 2.0), 2: (2, 4.0), 4: (4, 8.0), 8: (8, 16.0)}.items()},
        **{f"Standard_A{n}m_v2": c for n, c in {2: (2, 16.0), 4: (4, 32.0), 8: (8, 64.0)}.items()},
        **{
            f"Standard_{family}{n}{suffix}": c
            for family in ("D", "DS")
            for suffix in ("", "_v2")
            for n, c in {
                1: (1, 3.5),
                2: (2, 7.0),
                3: (4, 14.0),
                4: (8, 28.0),
                11: (2, 14.0),
                12: (4, 28.0),
                13: (8, 56.0),
                14: (16, 112.0),
            }.items()
        },
        **{f"Standard_D{n}_v2": (16, 56.0) for n in (5,)},
        **{f"Standard_DS{n}_v2": (16, 56.0) for n in (5,)},
        **{f"Standard_F{n}{s}": (n, 2.0 * n) for n in (1, 2, 4, 8, 16) for s in ("", "s")},
        **{f"Standard_F{n}s_v2": (n, 2.0 * n) for n in (2, 4, 8, 16, 32, 48, 64, 72)},
        # The GPU families (Microsoft Learn, "NCv3-series" and "NVv4-series" size pages).
        **{f"Standard_NC{n}s_v3": (n, memory) for n, memory in ((6, 112.0), (12, 224.0), (24, 448.0))},
        **{f"Standard_NV{n}as_v4": (n, 3.5 * n) for n in (4, 8, 16, 32)},
    }
)

_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_RESERVED_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease", "azureml", "azure-arc", "azure-arc-release"}
)
_CPU_QUANTITY = re.compile(r"(?P<number>\d+(\.\d+)?)(?P<milli>m?)")
_MEMORY_QUANTITY = re.compile(r"(?P<number>\d+)(?P<unit>Mi|Gi)")


@dataclass(frozen=True)
class InstanceTypeSizing:
    """The one instance type (`amlarc.azureml.com` InstanceType) jobs run with; requests = limits,
    so a job gets exactly what the scheduler counted on."""

    name: str
    cpu: str
    memory: str
    gpus: int = 0
    """nvidia.com/gpu in limits (Kubernetes copies extended resources to requests)."""


@dataclass(frozen=True)
class EdgeComputeSettings:
    mode: str
    """kubernetes (K3s on the Hub VM, Arc-connected, a Kubernetes compute) or virtual-machine."""
    vm_size: str
    """The effective Hub VM size: hubVmSize, or the mode's default when that is empty."""
    agent_count: int
    """K3s agent VMs joining the Hub VM's cluster (kubernetes mode only)."""
    namespace: str
    instance_type: InstanceTypeSizing
    connect_deadline_seconds: int
    """How long to wait for the Arc-connected cluster to report Connected."""
    gpus: int = 0
    """NVIDIA GPUs per node (hubVmSize's, every node having the same size); 0 on a CPU-only stack."""

    @property
    def kubernetes(self) -> bool:
        return self.mode == "kubernetes"

    @property
    def instance_types(self) -> tuple[InstanceTypeSizing, ...]:
        """Every instance type the compute offers: the default one, and on a GPU stack its GPU twin."""
        if not self.gpus:
            return (self.instance_type,)
        return (self.instance_type, gpu_instance_type(self.instance_type, self.gpus))


def _cpu_cores(text: str) -> float | None:
    match = _CPU_QUANTITY.fullmatch(text)
    if match is None:
        return None
    number = float(match["number"])
    return number / 1000 if match["milli"] else number


def _memory_gib(text: str) -> float | None:
    match = _MEMORY_QUANTITY.fullmatch(text)
    if match is None:
        return None
    number = float(match["number"])
    return number / 1024 if match["unit"] == "Mi" else number


def _edge_compute(r: _Reader, hub: HubSettings, attach: AttachSettings) -> EdgeComputeSettings:
    mode = r.string("edgeComputeMode")
    if mode not in EDGE_COMPUTE_MODES:
        r.problem("edgeComputeMode", f"{mode!r} is not one of {', '.join(EDGE_COMPUTE_MODES)}")
    kubernetes = mode == "kubernetes"
    vm_size = hub.vm_size or (KUBERNETES_DEFAULT_VM_SIZE if kubernetes else VIRTUAL_MACHINE_DEFAULT_VM_SIZE)
    agents = r.integer("hubAgentCount", 0, MAX_HUB_AGENTS)
    connect_deadline = r.integer("arcConnectDeadlineSeconds", 60, 7200)
    namespace = r.string("kubernetesNamespace")
    if not _K8S_NAME.fullmatch(namespace):
        r.problem("kubernetesNamespace", f"{namespace!r} is not a Kubernetes namespace name (DNS label, 1-63)")
    elif namespace in _RESERVED_NAMESPACES:
        r.problem("kubernetesNamespace", f"{namespace!r} belongs to Kubernetes, Arc or the Azure ML extension")
    cpu_text, memory_text = r.string("instanceTypeCpu"), r.string("instanceTypeMemory")
    cpu, memory = _cpu_cores(cpu_text), _memory_gib(memory_text)
    if cpu is None or cpu <= 0:
        r.problem("instanceTypeCpu", f"{cpu_text!r} is not a CPU quantity such as 2, 1.5 or 1500m")
    if memory is None or memory <= 0:
        r.problem("instanceTypeMemory", f"{memory_text!r} is not a memory quantity such as 8Gi or 6144Mi")

    if kubernetes:
        capacity = HUB_VM_SIZES.get(vm_size)
        if capacity is None:
            if not r.has_problem("hubVmSize"):
                r.problem(
                    "hubVmSize",
                    f"{vm_size!r}: no known vCPU and memory for it; choose a Hub size such as "
                    f"{KUBERNETES_DEFAULT_VM_SIZE}",
                )
        elif capacity[0] < EXTENSION_MIN_VCPUS or capacity[1] < EXTENSION_MIN_MEMORY_GIB:
            r.problem(
                "hubVmSize",
                f"{vm_size!r} has {capacity[0]} vCPU / {capacity[1]:g} GiB; the Azure ML extension needs at least "
                f"{EXTENSION_MIN_VCPUS} vCPU / {EXTENSION_MIN_MEMORY_GIB:g} GiB (Microsoft's reference-kubernetes); "
                f"the default {KUBERNETES_DEFAULT_VM_SIZE} leaves room for a job",
            )
        else:
            vcpus, gib = capacity
            if cpu is not None and cpu > vcpus - SYSTEM_RESERVED_VCPUS:
                r.problem(
                    "instanceTypeCpu",
                    f"{cpu_text} CPU does not fit on {vm_size} ({vcpus} vCPU, about "
                    f"{SYSTEM_RESERVED_VCPUS:g} taken by K3s, Arc and the Azure ML extension)",
                )
            if memory is not None and memory > gib - SYSTEM_RESERVED_MEMORY_GIB:
                r.problem(
                    "instanceTypeMemory",
                    f"{memory_text} does not fit on {vm_size} ({gib:g} GiB, about "
                    f"{SYSTEM_RESERVED_MEMORY_GIB:g} GiB taken by K3s, Arc and the Azure ML extension)",
                )
    else:
        # The VirtualMachine attach connects over SSH: it needs a key and somewhere to connect from.
        if agents:
            r.problem("hubAgentCount", "agent VMs join a Kubernetes cluster; set edgeComputeMode kubernetes")
        if not hub.ssh_source_cidrs and not r.has_problem("hubSshSourceCidrs"):
            r.problem("hubSshSourceCidrs", "must list at least one network allowed to reach SSH")
        if not attach.ssh_private_key and not r.has_problem("sshPrivateKey"):
            r.problem(
                "sshPrivateKey",
                "required with edgeComputeMode virtual-machine; set it with: "
                "pulumi config set --secret sshPrivateKey < keyfile",
            )
    gpus = _check_gpu_size(r, mode, vm_size)
    return EdgeComputeSettings(
        mode=mode,
        vm_size=vm_size,
        agent_count=agents if kubernetes else 0,
        namespace=namespace,
        instance_type=InstanceTypeSizing(name=INSTANCE_TYPE_NAME, cpu=cpu_text, memory=memory_text),
        connect_deadline_seconds=connect_deadline,
        gpus=gpus,
    )


# --- GPUs (issue 24): which Hub sizes give a job a GPU, and which are refused ---

# NVIDIA V100s per VM of the Hub's NCv3 sizes (passthrough: whole GPUs; Microsoft Learn, "NCv3-series":
# NC6s_v3 1, NC12s_v3 2, NC24s_v3 4; "Graphics processing unit (GPU) VM on Azure Stack Hub").
HUB_NVIDIA_GPUS: Mapping[str, int] = MappingProxyType(
    {"Standard_NC6s_v3": 1, "Standard_NC12s_v3": 2, "Standard_NC24s_v3": 4}
)
GPU_INSTANCE_TYPE_SUFFIX = "-gpu"
# MicrosoftDocs/azure-stack-docs, azure-stack/user/gpu-vms-about.md, "Partitioned GPU VM size":
# "NVv4 virtual machines currently support only Windows guest operating system", and the only
# driver it points to is AMD's Windows driver. Both modes run Ubuntu, so neither can use the MI25.
NVV4_REFUSAL = (
    "NVv4 (AMD Radeon Instinct MI25, partitioned) is not supported: Azure Stack Hub's GPU documentation "
    "says NVv4 VMs support only a Windows guest and documents only AMD's Windows driver, while both edge "
    "compute modes run Ubuntu, so no job could use the GPU; choose NCv3 (NVIDIA V100) or a CPU size "
    "(docs/deploy/gpus.md)"
)


def gpu_instance_type(base: InstanceTypeSizing, gpus: int) -> InstanceTypeSizing:
    """The GPU twin of the default instance type: the same CPU and memory, and every GPU of a node
    (one GPU job at a time on a node, with all of it; the Hub's NCv3 GPUs are whole, not shared)."""
    return InstanceTypeSizing(name=base.name + GPU_INSTANCE_TYPE_SUFFIX, cpu=base.cpu, memory=base.memory, gpus=gpus)


def _check_gpu_size(r: _Reader, mode: str, vm_size: str) -> int:
    """NVIDIA GPUs per node for `vm_size`; NVv4 refused in both modes, with the reason."""
    if HUB_VM_SIZE_FAMILIES["NVv4"].fullmatch(vm_size):
        r.problem("hubVmSize", f"{vm_size!r} with edgeComputeMode {mode}: {NVV4_REFUSAL}")
        return 0
    return HUB_NVIDIA_GPUS.get(vm_size, 0)


# --- Day two (issue 23): versions as configuration, and rotation on purpose ---------------------

_CHART_VERSION = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,4}")
_EXTENSION_VERSION = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,5}")
MAX_ROTATION = 1_000_000


@dataclass(frozen=True)
class DayTwoSettings:
    k3s: K3sRelease
    """What every node runs: first boot installs it, a change upgrades the nodes in place."""
    arc_agent_auto_upgrade: bool
    """On by default, as `az connectedk8s connect` leaves it; off only with a pinned version."""
    arc_agent_version: str | None
    """The azure-arc-k8sagents chart kept when auto-upgrade is off; None: the version first boot
    installs (edge/first_boot.py ARC_CHART_VERSION), from which auto-upgrade moves on."""
    extension_version: str | None
    """None: the extension follows the stable train's minor versions; else the pinned version."""
    onboarding_key_rotation: int
    """Raised by one to rotate the Arc onboarding key (providers/cluster_secrets.py)."""
    join_token_rotation: int = 0
    """Raised by one to rotate the K3s join token: the server re-encrypts in place, agents rejoin."""


def _day_two(r: _Reader) -> DayTwoSettings:
    from edge import k3s_releases

    version = r.string("k3sVersion")
    problem = k3s_releases.problem_with(version)
    if problem is not None:
        r.problem("k3sVersion", problem)
    release = k3s_releases.RELEASES.get(version) or k3s_releases.RELEASES[k3s_releases.DEFAULT_VERSION]

    auto = r.boolean("arcAgentAutoUpgrade")
    pinned = r.string("arcAgentVersion")
    if pinned and not _CHART_VERSION.fullmatch(pinned):
        r.problem("arcAgentVersion", f"{pinned!r} is not an azure-arc-k8sagents chart version X.Y.Z")
    elif pinned and auto:
        r.problem(
            "arcAgentVersion",
            "pins the Arc agents, which only holds with arcAgentAutoUpgrade false (the explicit opt-out)",
        )
    extension = r.string("azuremlExtensionVersion")
    if extension and not _EXTENSION_VERSION.fullmatch(extension):
        r.problem("azuremlExtensionVersion", f"{extension!r} is not an extension version X.Y.Z (or empty to follow)")
    return DayTwoSettings(
        k3s=release,
        arc_agent_auto_upgrade=auto,
        arc_agent_version=pinned or None,
        extension_version=extension or None,
        onboarding_key_rotation=r.integer("arcOnboardingKeyRotation", 0, MAX_ROTATION),
        join_token_rotation=r.integer("k3sJoinTokenRotation", 0, MAX_ROTATION),
    )
