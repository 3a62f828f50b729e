"""One Azure Stack Hub resource, managed through the Hub's Resource Manager at an exact API version.

Why not azure-native's generic `resources:Resource`: before every create its provider checks that
the resource does not exist with a GET at the provider's *own* API version for the type, not the
one the program passes (`defaultCreate` -> `crudClient.CanCreate`, which uses `res.APIVersion`;
pulumi/pulumi-azure-native#4109 and #4337). A Hub answers 400 for any version outside its
profile, so every create fails there. This provider sends only the versions it is given, and the
check below accepts only those of the Hub profile (see docs/deploy/hub.md, "The edge side at the Hub's API
versions").

Pulumi pickles the provider object into the state: it holds nothing. The Hub's endpoint,
subscription and tenant arrive as (non-secret) inputs; credentials are made inside each method
from the `HUB_ARM_*` variables (clients/credentials.py).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.runtime import rpc

from clients.arm import ArmClient, ArmError
from clients.cloud import Cloud, CloudDiscoveryError, discover
from clients.credentials import HUB_PREFIX, credential_from_environment, refuse_entra_only_sign_in
from clients.trust import CaCertificatesError, parse_ca_certificates, transport_trusting

log = logging.getLogger(__name__)

HUB_PROFILE = "2020-09-01-hybrid"
# The newest Azure Stack Hub profile (Microsoft Learn, "Manage API version profiles in Azure Stack
# Hub"): every request to a Hub goes out at exactly these versions.
HUB_API_VERSIONS: Mapping[str, str] = {
    "Microsoft.Storage": "2019-06-01",
    "Microsoft.Network": "2018-11-01",
    "Microsoft.Compute": "2020-06-01",
    "Microsoft.Resources": "2019-10-01",
}
IDENTITY_PROVIDERS = ("azuread", "adfs")
EXTENSION = ("Microsoft.Compute", "extensions")

# Inputs naming the resource or where it lives: a change means another resource.
IDENTITY = (
    "armEndpoint",
    "subscriptionId",
    "resourceGroupName",
    "resourceProviderNamespace",
    "resourceType",
    "parentResourcePath",
    "resourceName",
    "location",
)
BODY = ("tags", "sku", "kind", "properties", "secretProperties")
# caCertificates: the Hub's CA (PEM, public), trusted next to certifi's roots for every request.
INPUTS = (*IDENTITY, "tenantId", "identityProvider", "caCertificates", "apiVersion", *BODY)
OUTPUTS = ("observedProperties",)

# What Resource Manager refuses to change in place (409 PropertyChangeNotAllowed, or a silent
# no-op), per type: the path under the body, top level first. Changing one replaces the resource.
#  - a storage account's kind; a public IP's version and SKU;
#  - a VM's image, and its whole osProfile (admin user, keys, computer name, customData: ARM
#    refuses the change, and cloud-init would not run again anyway); its NIC, which moves
#    only on a deallocated VM, which Pulumi cannot express;
#  - an extension's publisher and type.
IMMUTABLE: Mapping[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("Microsoft.Storage", "storageAccounts"): (("kind",),),
    ("Microsoft.Network", "publicIPAddresses"): (("sku",), ("properties", "publicIPAddressVersion")),
    ("Microsoft.Compute", "virtualMachines"): (
        ("properties", "storageProfile", "imageReference"),
        ("properties", "osProfile"),
        ("secretProperties", "osProfile"),
        ("properties", "networkProfile"),
    ),
    ("Microsoft.Compute", "extensions"): (("properties", "publisher"), ("properties", "type")),
}

# What Resource Manager requires of each type at these versions (the models' `required`), checked
# before any request so that a missing field is named here rather than by a 400 mid-deployment.
REQUIRED: Mapping[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("Microsoft.Storage", "storageAccounts"): (("location",), ("sku", "name"), ("kind",)),
    ("Microsoft.Network", "networkSecurityGroups"): (("location",),),
    ("Microsoft.Network", "virtualNetworks"): (("location",), ("properties", "addressSpace")),
    ("Microsoft.Network", "publicIPAddresses"): (("location",),),
    ("Microsoft.Network", "networkInterfaces"): (("location",), ("properties", "ipConfigurations")),
    ("Microsoft.Compute", "virtualMachines"): (
        ("location",),
        ("properties", "hardwareProfile", "vmSize"),
        ("properties", "storageProfile"),
        ("properties", "networkProfile"),
    ),
    ("Microsoft.Compute", "extensions"): (
        ("location",),
        ("properties", "publisher"),
        ("properties", "type"),
        ("properties", "typeHandlerVersion"),
    ),
}

SEGMENT = re.compile(r"[^/?#%\\\s]+")
_PATH = re.compile(r"[^?#%\\\s]+")
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")


def known(value: Any) -> bool:
    return value != rpc.UNKNOWN


def _contains_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_unknown(v) for v in value)
    return value == rpc.UNKNOWN


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _normal(value: Any) -> Any:
    """Missing, None and empty are one thing to Resource Manager (no tags = empty tags)."""
    return None if value in (None, {}, []) else value


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`overlay` (the secret part of a body) laid into `base`, object by object."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def without(base: Any, overlay: Mapping[str, Any]) -> Any:
    """`base` with every leaf of `overlay` taken out: what Resource Manager echoes of a secret
    (it should echo none) never reaches the plain outputs."""
    if not isinstance(base, Mapping):
        return base
    result = {}
    for key, value in base.items():
        if key not in overlay:
            result[key] = value
        elif isinstance(overlay[key], Mapping) and isinstance(value, Mapping):
            result[key] = without(value, overlay[key])
    return result


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for child in value.values():
            yield from _leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child)
    elif isinstance(value, str) and len(value) >= 4:
        yield value


def arm_path(props: Mapping[str, Any]) -> str:
    parent = str(props.get("parentResourcePath") or "").strip("/")
    return (
        f"/subscriptions/{props['subscriptionId']}/resourceGroups/{props['resourceGroupName']}"
        f"/providers/{props['resourceProviderNamespace']}/{parent + '/' if parent else ''}"
        f"{props['resourceType']}/{props['resourceName']}"
    )


def body_of(props: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in ("location", "tags", "sku", "kind"):
        if _normal(props.get(key)) is not None:
            body[key] = props[key]
    body["properties"] = merge(props.get("properties") or {}, props.get("secretProperties") or {})
    return body


_SESSIONS: dict[tuple[Any, ...], tuple[Cloud, TokenCredential]] = {}
_SESSIONS_LOCK = threading.Lock()


class InputCheck:
    """A provider's check of its inputs before any request: presence, type and shape, each failure
    naming its field and never showing a secret's value. Unknown values (a preview) pass."""

    def __init__(self, news: Mapping[str, Any]) -> None:
        self.news = news
        self.failures: list[CheckFailure] = []

    def fail(self, prop: str, reason: str) -> None:
        self.failures.append(CheckFailure(prop, reason))

    def string(self, prop: str, required: bool, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.news.get(prop)
        if not known(value):
            return None
        if value in (None, ""):
            if required:
                self.fail(prop, "is required")
            return None
        if not isinstance(value, str):
            self.fail(prop, f"must be a string, not {type(value).__name__}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(prop, f"{value!r} is not valid here")
            return None
        return value

    def https_url(self, prop: str) -> None:
        url = self.string(prop, True)
        if url is not None and not url.startswith("https://"):
            self.fail(prop, f"{url!r} is not an https URL")

    def ca_certificates(self) -> None:
        """caCertificates (hubCaCertificates), optional: PEM CA certificates only."""
        if (ca := self.string("caCertificates", False)) is not None:
            try:
                parse_ca_certificates(ca)
            except CaCertificatesError as error:
                self.fail("caCertificates", str(error))

    def identity_provider(self) -> None:
        provider = self.string("identityProvider", True)
        if provider is not None and provider not in IDENTITY_PROVIDERS:
            self.fail("identityProvider", f"{provider!r} is not one of {', '.join(IDENTITY_PROVIDERS)}")


class HubArmError(RuntimeError):
    """What went wrong with one Hub resource, with every secret input value blanked out."""


class HubArmResourceProvider(ResourceProvider):
    """check, create, read (refresh), diff, update and delete of one ARM resource on a Hub."""

    def __init__(self, transport: HttpTransport | None = None) -> None:
        # Tests hand in a transport that trusts their CA and records retry waits; it is dropped
        # from the pickled provider (__getstate__), which therefore carries no state at all.
        self._transport = transport

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self._transport = None

    # --- clients, made per call -----------------------------------------------------------------

    def _transport_for(self, props: Mapping[str, Any]) -> HttpTransport | None:
        """The tests' transport, else one trusting the Hub's CA (when given) next to certifi's."""
        return self._transport or transport_trusting(props.get("caCertificates") or None)

    def _client(self, props: Mapping[str, Any]) -> ArmClient:
        cloud, credential = self._session(props)
        return ArmClient(cloud, credential, transport=self._transport_for(props))

    def client_for(self, props: Mapping[str, Any]) -> ArmClient:
        """A Resource Manager client for the Hub `props` name (armEndpoint, identityProvider,
        tenantId), on this process's shared sign-in: for the other Hub providers (the blob
        container's listKeys)."""
        return self._client(props)

    def _session(self, props: Mapping[str, Any]) -> tuple[Cloud, TokenCredential]:
        """The Hub's metadata and a credential for it, once per process and sign-in: every call of
        a deployment would otherwise read the metadata and fetch a token again (three requests,
        two of them to AD FS). Kept in memory only, never in the pickled provider."""
        environment = sorted((k, v) for k, v in os.environ.items() if k.startswith(HUB_PREFIX))
        key = (
            str(props["armEndpoint"]),
            str(props.get("identityProvider")),
            str(props.get("tenantId")),
            hashlib.sha256(repr(environment).encode()).hexdigest(),
            id(self._transport_for(props)),
        )
        with _SESSIONS_LOCK:
            if key in _SESSIONS:
                return _SESSIONS[key]
        wanted_adfs = props.get("identityProvider") == "adfs"
        if wanted_adfs:  # before the metadata read: nothing is sent for a sign-in that cannot work
            refuse_entra_only_sign_in(os.environ, HUB_PREFIX)
        transport = self._transport_for(props)
        cloud = discover(str(props["armEndpoint"]), transport=transport)
        if cloud.uses_adfs != wanted_adfs:
            raise HubArmError(
                f"identityProvider is {props.get('identityProvider')!r}, but {props['armEndpoint']} signs in at "
                f"{cloud.login_endpoint} ({'AD FS' if cloud.uses_adfs else 'Microsoft Entra ID'}); "
                "set hubIdentityProvider to match the Hub"
            )
        credential = credential_from_environment(
            os.environ,
            prefix=HUB_PREFIX,
            cloud=cloud,
            transport=transport,
            tenant_id=None if wanted_adfs else (props.get("tenantId") or None),
        )
        with _SESSIONS_LOCK:
            return _SESSIONS.setdefault(key, (cloud, credential))

    @staticmethod
    def _redacted(error: Exception, props: Mapping[str, Any]) -> HubArmError:
        text = str(error)
        for secret in sorted(set(_leaves(props.get("secretProperties"))), key=len, reverse=True):
            text = text.replace(secret, "[secret]")
        return HubArmError(f"{props.get('resourceType')} {props.get('resourceName')!r}: {text}")

    # --- check ----------------------------------------------------------------------------------

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Every field's presence and type before any request; each failure names its field and
        never shows a secret's value."""
        inputs = InputCheck(news)
        failures, fail, string = inputs.failures, inputs.fail, inputs.string
        inputs.https_url("armEndpoint")
        string("subscriptionId", True, SEGMENT)
        string("resourceGroupName", True, SEGMENT)
        string("resourceType", True, SEGMENT)
        string("resourceName", True, SEGMENT)
        string("parentResourcePath", False, _PATH)
        string("location", False)
        string("kind", False)
        string("tenantId", False, SEGMENT)
        inputs.ca_certificates()
        inputs.identity_provider()
        namespace = string("resourceProviderNamespace", True)
        version = string("apiVersion", True, _API_VERSION)
        if namespace is not None and namespace not in HUB_API_VERSIONS:
            fail("resourceProviderNamespace", f"{namespace} is not in Azure Stack Hub profile {HUB_PROFILE}")
        elif namespace is not None and version is not None and version != HUB_API_VERSIONS[namespace]:
            fail(
                "apiVersion",
                f"{namespace} at {version}: the Hub profile {HUB_PROFILE} has {HUB_API_VERSIONS[namespace]}",
            )
        for prop in ("properties", "secretProperties", "sku"):
            value = news.get(prop)
            if known(value) and value is not None and not isinstance(value, Mapping):
                fail(prop, f"must be an object, not {type(value).__name__}")
        tags = news.get("tags")
        if known(tags) and tags is not None:
            if not isinstance(tags, Mapping):
                fail("tags", f"must be an object, not {type(tags).__name__}")
            else:
                for key, value in tags.items():
                    if known(value) and not isinstance(value, str):
                        fail("tags", f"tag {key!r} must be a string")
        required = REQUIRED.get((str(news.get("resourceProviderNamespace")), str(news.get("resourceType"))), ())
        if not failures and not _contains_unknown(news.get("properties")):
            merged = {**news, "properties": body_of(news)["properties"]}
            for path in required:
                if _dig(merged, path) in (None, "", {}, []):
                    fail(path[0], f"{'.'.join(path)} is required for {news['resourceType']}")
        public, secret = news.get("properties"), news.get("secretProperties")
        if isinstance(public, Mapping) and isinstance(secret, Mapping):
            overlap = [k for k in secret if k in public and not isinstance(public[k], Mapping)]
            if overlap:
                fail("secretProperties", f"{', '.join(overlap)} also given in properties")
        return CheckResult(news, failures)

    # --- create, read, update, delete -----------------------------------------------------------

    def create(self, props: dict[str, Any]) -> CreateResult:
        path = arm_path(props)
        try:
            with self._client(props) as client:
                version = str(props["apiVersion"])
                existing = client.get(path, version)
                if existing is not None and not self._ours(existing, props):
                    raise HubArmError(self._exists_message(path, props))
                if existing is not None:
                    # This stack's tags: an earlier run created it and was interrupted before it
                    # could record it, or an operator tagged it to hand it over. Finish the job.
                    log.warning("%s exists with this stack's tags; adopting it", path)
                resource = self._put_and_settle(client, path, version, props, creating=True)
        except HubArmError:
            raise
        except (ArmError, CloudDiscoveryError, ValueError) as error:
            raise self._redacted(error, props) from None
        return CreateResult(id_=str(resource.get("id") or path), outs=self._outs(props, resource))

    @staticmethod
    def _exists_message(path: str, props: Mapping[str, Any]) -> str:
        # Pulumi cannot import into a dynamic resource (pulumi/pulumi#16175: the provider is not in
        # an import's inputs), so the way to import is to mark the resource as this stack's.
        tags = props.get("tags") or {}
        if not tags:
            return f"{path} already exists on the Hub; delete it or choose another name"
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))
        return (
            f"{path} already exists on the Hub and is not this stack's. Delete it or choose another name; "
            f"to import it into this stack instead, give it these tags and run again: {wanted}"
        )

    @staticmethod
    def _ours(existing: Mapping[str, Any], props: Mapping[str, Any]) -> bool:
        wanted = props.get("tags") or {}
        actual = existing.get("tags") or {}
        return bool(wanted) and all(actual.get(k) == v for k, v in wanted.items())

    def _put_and_settle(
        self, client: ArmClient, path: str, version: str, props: Mapping[str, Any], creating: bool
    ) -> dict[str, Any]:
        body = body_of(props)
        if not creating and (props.get("resourceProviderNamespace"), props.get("resourceType")) == EXTENSION:
            # An update is the channel of day two (docs/operate/day-two.md): the handler must run
            # again, even when Resource Manager already holds these settings from an attempt that
            # failed. forceUpdateTag: "How the extension handler should be forced to update even if
            # the extension configuration has not changed" (Compute 2020-06-01,
            # VirtualMachineExtensionProperties). Only ever sent by an update, which only a diff makes.
            body["properties"]["forceUpdateTag"] = uuid.uuid4().hex
        try:
            resource = client.put(path, version, body)
        except ArmError as error:
            if creating and error.status is not None and error.status < 500:
                # A failed create leaves a Failed resource behind, which would block the next run
                # under this name: remove it, then report. (A failed update keeps the resource.)
                failed = client.get(path, version)
                if failed is not None and _dig(failed, ("properties", "provisioningState")) == "Failed":
                    log.warning("removing %s, left in Failed state", path)
                    client.delete(path, version)
            raise
        state = _dig(resource, ("properties", "provisioningState"))
        if state not in (None, "Succeeded"):
            raise ArmError(f"PUT {path}", None, "ProvisioningState", f"ended in {state}")
        return resource

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        try:
            with self._client(news) as client:
                resource = self._put_and_settle(client, arm_path(news), str(news["apiVersion"]), news, creating=False)
        except HubArmError:
            raise
        except (ArmError, CloudDiscoveryError, ValueError) as error:
            raise self._redacted(error, news) from None
        return UpdateResult(outs=self._outs(news, resource))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            with self._client(props) as client:
                resource = client.get(arm_path(props), str(props["apiVersion"]))
        except HubArmError:
            raise
        except (ArmError, CloudDiscoveryError, ValueError) as error:
            raise self._redacted(error, props) from None
        if resource is None:
            log.warning("%s is gone from the Hub", arm_path(props))
            return ReadResult(id_=None, outs={})
        outs = self._outs(props, resource)
        # Tags are the one part of the body Resource Manager echoes verbatim: a tag changed by
        # hand shows up as a difference on the next `pulumi up`.
        outs["tags"] = resource.get("tags") or None
        return ReadResult(id_=str(resource.get("id") or id_), outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            with self._client(props) as client:
                if not client.delete(arm_path(props), str(props["apiVersion"])):
                    log.info("%s was already gone", arm_path(props))
        except HubArmError:
            raise
        except (ArmError, CloudDiscoveryError, ValueError) as error:
            raise self._redacted(error, props) from None

    @staticmethod
    def _outs(props: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
        outs = {k: props.get(k) for k in INPUTS}
        observed = resource.get("properties") or {}
        outs["observedProperties"] = without(observed, props.get("secretProperties") or {})
        return outs

    # --- diff -----------------------------------------------------------------------------------

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        def changed(path: tuple[str, ...]) -> bool:
            new = _dig(news, path)
            return _contains_unknown(new) or _normal(_dig(olds, path)) != _normal(new)

        kind = (str(news.get("resourceProviderNamespace")), str(news.get("resourceType")))
        replace_paths = [(key,) for key in IDENTITY] + list(IMMUTABLE.get(kind, ()))
        replaces = sorted({path[0] for path in replace_paths if changed(path)})
        updates = [key for key in INPUTS if key not in replaces and changed((key,))]
        return DiffResult(
            changes=bool(replaces or updates),
            replaces=replaces,
            # Resource Manager names are identities: a replacement must delete first, or the
            # new PUT would land on the old resource.
            delete_before_replace=True,
        )


@dataclass(frozen=True)
class HubArmResourceArgs:
    """One resource: where the Hub is, where the resource lives, and its body. `secret_properties`
    is laid into `properties` when sent and stays secret in the state."""

    arm_endpoint: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    identity_provider: pulumi.Input[str]
    namespace: str
    resource_type: str
    resource_name: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    api_version: str
    properties: pulumi.Input[Mapping[str, Any]]
    secret_properties: pulumi.Input[Mapping[str, Any]] | None = None
    tenant_id: pulumi.Input[str] | None = None
    ca_certificates: str | None = None
    parent_resource_path: pulumi.Input[str] = ""
    location: pulumi.Input[str] | None = None
    sku: pulumi.Input[Mapping[str, Any]] | None = None
    kind: pulumi.Input[str] | None = None
    tags: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class HubArmResource(pulumi.dynamic.Resource, module="edge-training", name="HubArmResource"):
    """One ARM resource on the Hub at an exact API version. Outputs: the inputs, and
    `observedProperties`, the properties as Resource Manager returned them (secrets taken out)."""

    def __init__(
        self,
        name: str,
        args: HubArmResourceArgs,
        opts: pulumi.ResourceOptions | None = None,
        provider: HubArmResourceProvider | None = None,
    ) -> None:
        secret = args.secret_properties
        props: dict[str, Any] = {
            "armEndpoint": args.arm_endpoint,
            "subscriptionId": args.subscription_id,
            "tenantId": args.tenant_id,
            "identityProvider": args.identity_provider,
            "caCertificates": args.ca_certificates or None,
            "resourceProviderNamespace": args.namespace,
            "resourceType": args.resource_type,
            "parentResourcePath": args.parent_resource_path,
            "resourceName": args.resource_name,
            "resourceGroupName": args.resource_group_name,
            "apiVersion": args.api_version,
            "location": args.location,
            "sku": args.sku,
            "kind": args.kind,
            "tags": dict(args.tags) or None,
            "properties": args.properties,
            "secretProperties": None if secret is None else pulumi.Output.secret(secret),
            **dict.fromkeys(OUTPUTS),
        }
        super().__init__(
            provider or HubArmResourceProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    # Resource Manager names are identities: the old one must go before the new PUT.
                    delete_before_replace=True,
                    additional_secret_outputs=["secretProperties"],
                ),
            ),
        )

    # A dynamic resource's outputs are attributes named like its properties (camelCase).
    @property
    def name(self) -> pulumi.Output[str]:
        """The resource's name in Resource Manager."""
        return self.__dict__["resourceName"]

    @property
    def observed_properties(self) -> pulumi.Output[dict[str, Any]]:
        return self.__dict__["observedProperties"]
