"""A stand-in for an Azure Stack Hub's Resource Manager, over HTTPS on 127.0.0.1 with a test CA,
and a small engine that drives the Hub ARM provider through the program's resources.

Stateful, and as strict as a Hub where it matters to us:
- metadata at `api-version=2015-01-01` only (the only format a Hub serves); an AD FS farm for
  sign-in (openid-configuration and a token endpoint checking the client's id, secret and scope);
- resources kept in memory; PUT and DELETE asynchronous (storage accounts 202 + Location, the rest
  201/200 + Azure-AsyncOperation), finishing on the second poll; a storage account's `listKeys`;
- no ARM path for blob containers (`blobServices/containers`): a Hub's Microsoft.Storage serves
  none (its profile tables list accounts, keys, names, usages and operations only), so it answers
  400 InvalidResourceType, as Resource Manager does for a type its provider does not register;
- 400 `InvalidApiVersionParameter` for a missing or malformed version and 400
  `NoRegisteredProviderFound` for any version outside profile 2020-09-01-hybrid, on every
  resource and operation request;
- 400 for a body that Microsoft's model of that API version does not accept (unknown or read-only
  fields, missing required ones: tests/harness/arm_models.check_body);
- references checked (a NIC's subnet and public IP, a VM's NIC, a subnet's NSG, a child's parent),
  in-use resources refuse deletion, and properties ARM cannot change in place answer 409
  PropertyChangeNotAllowed, so out-of-order creates and deletes and wrong updates fail here as
  they would on a Hub;
- GET never returns a VM's customData or an extension's protectedSettings.
Faults (429, 500, a failed provisioning) are injected per request.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.mgmt.compute.v2020_06_01 import models as compute_models
from azure.mgmt.network.v2018_11_01 import models as network_models
from azure.mgmt.storage.v2019_06_01 import models as storage_models

from providers.hub_arm_resource import HubArmResourceProvider
from tests.harness.arm_models import check_body
from tests.harness.arm_server import Recorded, RecordingTransport, _body, https_server
from tests.harness.pulumi_mocks import Recording

METADATA_VERSION = "2015-01-01"
# Profile 2020-09-01-hybrid, written out again: the stand-in plays the Hub, not our code.
PROFILE = {
    "Microsoft.Storage": "2019-06-01",
    "Microsoft.Network": "2018-11-01",
    "Microsoft.Compute": "2020-06-01",
    "Microsoft.Resources": "2019-10-01",
}
MODELS: dict[tuple[str, str], type] = {
    ("Microsoft.Storage", "storageAccounts"): storage_models.StorageAccountCreateParameters,
    ("Microsoft.Network", "networkSecurityGroups"): network_models.NetworkSecurityGroup,
    ("Microsoft.Network", "virtualNetworks"): network_models.VirtualNetwork,
    ("Microsoft.Network", "publicIPAddresses"): network_models.PublicIPAddress,
    ("Microsoft.Network", "networkInterfaces"): network_models.NetworkInterface,
    ("Microsoft.Compute", "virtualMachines"): compute_models.VirtualMachine,
    ("Microsoft.Compute", "virtualMachines/extensions"): compute_models.VirtualMachineExtension,
}
# Never returned by GET (Microsoft documents customData and protectedSettings as write-only).
WRITE_ONLY = {
    "virtualMachines": (("osProfile", "customData"), ("osProfile", "adminPassword")),
    "virtualMachines/extensions": (("protectedSettings",),),
}
# Changing these answers 409 PropertyChangeNotAllowed.
IMMUTABLE = {
    "storageAccounts": (("kind",),),
    "publicIPAddresses": (("sku",), ("properties", "publicIPAddressVersion")),
    "virtualMachines": (
        ("properties", "storageProfile", "imageReference"),
        ("properties", "osProfile"),
        ("properties", "networkProfile"),
    ),
    "virtualMachines/extensions": (("properties", "publisher"), ("properties", "type")),
}
IN_USE_CODES = {
    "networkSecurityGroups": "InUseNetworkSecurityGroupCannotBeDeleted",
    "virtualNetworks": "InUseSubnetCannotBeDeleted",
    "publicIPAddresses": "PublicIPAddressInUse",
    "networkInterfaces": "NicInUse",
}
AUDIENCE = "https://management.adfs.azurestack.local/4de154de-f8a8-4017-af41-df619da68155"
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_RESOURCE = re.compile(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/([^/]+)/(.+)", re.IGNORECASE)
_OPERATION = re.compile(
    r"/subscriptions/([^/]+)/providers/([^/]+)/locations/([^/]+)/(operations|asyncoperations)/([^/]+)"
)


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    reply: Reply
    times: int


@dataclass
class Operation:
    id: str
    key: str
    action: str  # "put" or "delete"
    namespace: str
    kind: str
    polls: int = 0
    failure: tuple[str, str] | None = None
    done: bool = False


@dataclass
class HubArm:
    """The stand-in's state, which tests read and script."""

    url: str
    ca_file: Path
    subscription_id: str
    resource_group: str
    location: str
    client_id: str
    client_secret: str
    requests: list[Recorded] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    failing_provisioning: dict[str, tuple[str, str]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    storage_keys: dict[str, str] = field(default_factory=dict)
    """Account name -> the key listKeys answers (made up per account unless a test sets it)."""
    retry_after: str = "1"
    """What operation answers say in Retry-After (clients in tests record waits instead of sleeping)."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    latency_s: float = 0.0
    """Held before every answer: a Hub across a WAN, slow as the real one is."""
    echoes_write_only: bool = False
    """A Hub build that echoes what Microsoft documents as write-only (customData, adminPassword):
    the provider's filter of secrets out of plain outputs must hold even then."""

    def transport(self) -> RecordingTransport:
        return RecordingTransport(connection_verify=str(self.ca_file))

    def inject(self, method: str, pattern: str, reply: Reply, times: int = 1) -> None:
        """Answer the next `times` requests matching `method` and the path regex with `reply`."""
        self.faults.append(Fault(method, re.compile(pattern), reply, times))

    def fail_provisioning(self, name: str, code: str, message: str) -> None:
        """The next PUT of a resource named `name` is accepted, then its operation ends Failed."""
        self.failing_provisioning[name.lower()] = (code, message)

    def arm_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(("/subscriptions/", "/metadata/"))]

    def outside_profile(self) -> list[Recorded]:
        """Every Resource Manager request whose api-version a Hub would refuse."""
        bad = []
        for request in self.arm_requests():
            version = (request.query.get("api-version") or [""])[0]
            if request.path.startswith("/metadata/"):
                ok = version == METADATA_VERSION
            else:
                namespace = _namespace_of(request.path)
                ok = namespace in PROFILE and version == PROFILE[namespace]
            if not ok:
                bad.append(request)
        return bad

    def resource(self, path: str) -> dict[str, Any] | None:
        return self.resources.get(path.lower())


def _namespace_of(path: str) -> str | None:
    match = _RESOURCE.fullmatch(path) or _OPERATION.fullmatch(path)
    if match is None:
        return None
    return match.group(3) if match.re is _RESOURCE else match.group(2)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers or {})


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ids(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "id" and isinstance(child, str):
                yield child
            else:
                yield from _ids(child)
    elif isinstance(value, list):
        for child in value:
            yield from _ids(child)


class _Arm:
    """Request handling on `HubArm`'s state."""

    def __init__(self, hub: HubArm) -> None:
        self.hub = hub
        self._serial = itertools.count(1)

    # --- sign-in ---------------------------------------------------------------------------------

    def metadata(self, query: dict[str, list[str]]) -> Reply:
        version = (query.get("api-version") or [""])[0]
        if version != METADATA_VERSION:
            return _error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{METADATA_VERSION}'.",
            )
        return Reply(
            200,
            {
                "galleryEndpoint": f"{self.hub.url}/gallery/",
                "graphEndpoint": f"{self.hub.url}/graph/",
                "portalEndpoint": f"{self.hub.url}/portal/",
                "authentication": {"loginEndpoint": f"{self.hub.url}/adfs", "audiences": [AUDIENCE]},
            },
        )

    def openid(self) -> Reply:
        base = f"{self.hub.url}/adfs"
        return Reply(
            200,
            {
                "issuer": base,
                "token_endpoint": f"{base}/oauth2/token",
                "authorization_endpoint": f"{base}/oauth2/authorize",
            },
        )

    def token(self, form: Any) -> Reply:
        form = form if isinstance(form, dict) else {}
        if form.get("client_id") != self.hub.client_id or form.get("client_secret") != self.hub.client_secret:
            return Reply(401, {"error": "invalid_client", "error_description": "MSIS9607: client authentication"})
        if form.get("scope") != f"{AUDIENCE}/.default":
            return Reply(400, {"error": "invalid_scope", "error_description": f"unknown scope {form.get('scope')}"})
        token = secrets.token_urlsafe(24)
        self.hub.tokens.add(token)
        return Reply(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token})

    # --- Resource Manager ------------------------------------------------------------------------

    def _version_problem(self, namespace: str, kind: str, query: dict[str, list[str]]) -> Reply | None:
        version = (query.get("api-version") or [""])[0]
        if not _VERSION.fullmatch(version):
            return _error(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
        if namespace not in PROFILE:
            return _error(400, "NoRegisteredProviderFound", f"No registered resource provider found for '{namespace}'.")
        if version != PROFILE[namespace]:
            return _error(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location '{self.hub.location}' and API version "
                f"'{version}' for type '{kind}'. The supported api-versions are '{PROFILE[namespace]}'.",
            )
        return None

    def arm(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any) -> Reply:
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or authorization[7:] not in self.hub.tokens:
            return _error(401, "AuthenticationFailed", "Authentication failed.")
        operation = _OPERATION.fullmatch(path)
        if operation is not None:
            problem = self._version_problem(operation.group(2), "operations", query)
            return problem or self.operation_status(operation.group(5), operation.group(4))
        match = _RESOURCE.fullmatch(path)
        if match is None:
            return _error(404, "NotFound", f"{method} {path}")
        subscription, group, namespace, rest = match.groups()
        parts = rest.strip("/").split("/")
        kind = "/".join(parts[0::2])
        if (problem := self._version_problem(namespace, kind, query)) is not None:
            return problem
        if subscription != self.hub.subscription_id:
            return _error(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
        if group.lower() != self.hub.resource_group.lower():
            return _error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        if method == "POST" and namespace == "Microsoft.Storage" and len(parts) == 3 and parts[2] == "listKeys":
            return self.list_keys(path.lower().rsplit("/", 1)[0], parts[1])
        if len(parts) % 2 or (namespace, kind) not in MODELS:
            if kind.startswith("storageAccounts/blobServices"):
                return _error(
                    400,
                    "InvalidResourceType",
                    f"The resource type '{kind}' could not be found in the namespace '{namespace}' for api version "
                    f"'{PROFILE[namespace]}'.",
                )
            return _error(400, "InvalidResourceType", f"The resource type '{kind}' is not in '{namespace}'.")
        key = path.lower()
        if method == "GET":
            return self.get(key, kind)
        if method == "PUT":
            return self.put(path, key, namespace, kind, parts, body)
        if method == "DELETE":
            return self.delete(key, namespace, kind)
        return _error(405, "MethodNotAllowed", method)

    def list_keys(self, account_key: str, name: str) -> Reply:
        account = self.hub.resources.get(account_key)
        if account is None or account["properties"].get("provisioningState") not in (None, "Succeeded"):
            return _error(404, "ResourceNotFound", f"The storage account '{name}' was not found.")
        value = self.hub.storage_keys.setdefault(name, base64.b64encode(secrets.token_bytes(64)).decode())
        return Reply(200, {"keys": [{"keyName": "key1", "value": value, "permissions": "FULL"}]})

    def _view(self, key: str, kind: str) -> dict[str, Any]:
        view = copy.deepcopy(self.hub.resources[key])
        for secret in () if self.hub.echoes_write_only else WRITE_ONLY.get(kind, ()):
            parent = _dig(view["properties"], secret[:-1]) if len(secret) > 1 else view["properties"]
            if isinstance(parent, dict):
                parent.pop(secret[-1], None)
        return view

    def get(self, key: str, kind: str) -> Reply:
        if key not in self.hub.resources:
            return _error(404, "ResourceNotFound", "The Resource was not found.")
        return Reply(200, self._view(key, kind))

    def _resolves(self, reference: str) -> bool:
        lowered = reference.lower()
        if lowered in self.hub.resources:
            return True
        # A child element kept inside its parent's body: a subnet, an IP configuration.
        parent, _, name = lowered.rpartition("/")
        owner, _, collection = parent.rpartition("/")
        resource = self.hub.resources.get(owner)
        elements = (resource or {}).get("properties", {}).get(collection) or []
        return any(str(e.get("name", "")).lower() == name for e in elements if isinstance(e, dict))

    def _settle(self, key: str) -> None:
        """A new request for a resource finds its earlier operation finished (time has passed)."""
        for operation in self.hub.operations.values():
            if operation.key == key and not operation.done:
                self._finish(operation)

    def put(self, path: str, key: str, namespace: str, kind: str, parts: list[str], body: Any) -> Reply:
        if not isinstance(body, dict):
            return _error(400, "InvalidRequestContent", "The request content could not be deserialized.")
        problems = check_body(MODELS[(namespace, kind)], body)
        if problems:
            return _error(400, "InvalidRequestContent", "; ".join(problems))
        if "/" in kind:
            parent = key.rsplit("/", 2)[0].removesuffix("/blobservices/default")
            if parent not in self.hub.resources:
                return _error(404, "ParentResourceNotFound", f"Parent resource '{parent}' not found.")
        if "location" in body and body["location"] != self.hub.location:
            return _error(400, "LocationNotAvailableForResourceType", f"Location {body['location']!r} is not offered.")
        for reference in _ids(body.get("properties")):
            if not self._resolves(reference):
                return _error(400, "InvalidResourceReference", f"Resource {reference} referenced by {path} not found.")
        self._settle(key)
        existing = self.hub.resources.get(key)
        if existing is not None:
            if body.get("location", existing.get("location")) != existing.get("location"):
                return _error(400, "InvalidResourceLocation", "The resource already exists in another location.")
            for immutable in IMMUTABLE.get(kind, ()):
                if _dig(existing, immutable) != _dig(body, immutable):
                    return _error(
                        409, "PropertyChangeNotAllowed", f"Changing property '{'.'.join(immutable)}' is not allowed."
                    )
        name = parts[-1]
        properties = copy.deepcopy(body.get("properties") or {})
        server = (existing or {}).get("properties", {})
        for added in ("resourceGuid", "vmId", "ipAddress", "primaryEndpoints"):
            if added in server:
                properties[added] = server[added]
        if existing is None:
            if kind in ("virtualNetworks", "networkSecurityGroups", "publicIPAddresses", "networkInterfaces"):
                properties["resourceGuid"] = str(uuid.uuid4())
            if kind == "publicIPAddresses":
                properties["ipAddress"] = f"192.0.2.{next(self._serial) + 10}"
            if kind == "virtualMachines":
                properties["vmId"] = str(uuid.uuid4())
            if kind == "storageAccounts":
                properties["primaryEndpoints"] = {
                    "blob": f"https://{name}.blob.{self.hub.location}.azurestack.external/"
                }
        resource = {
            "id": path,
            "name": name,
            "type": f"{namespace}/{kind}",
            **{k: copy.deepcopy(body[k]) for k in ("location", "tags", "sku", "kind") if k in body},
            "properties": properties,
        }
        properties["provisioningState"] = "Updating" if existing else "Creating"
        self.hub.resources[key] = resource
        operation = self._operation(key, "put", namespace, kind)
        if (failure := self.hub.failing_provisioning.pop(name.lower(), None)) is not None:
            operation.failure = failure
        if kind == "storageAccounts":  # 202, no body, Location (azure-rest-api-specs storage.json)
            return Reply(
                202,
                None,
                {"Location": self._status_url(operation, "asyncoperations"), "Retry-After": self.hub.retry_after},
            )
        return Reply(
            200 if existing else 201,
            self._view(key, kind),
            {"Azure-AsyncOperation": self._status_url(operation, "operations"), "Retry-After": self.hub.retry_after},
        )

    def delete(self, key: str, namespace: str, kind: str) -> Reply:
        self._settle(key)
        if key not in self.hub.resources:
            return Reply(204)
        for other_key, other in self.hub.resources.items():
            if other_key == key or other_key.startswith(key + "/"):
                continue
            for reference in _ids(other.get("properties")):
                if reference.lower() == key or reference.lower().startswith(key + "/"):
                    code = IN_USE_CODES.get(kind, "ResourceInUse")
                    return _error(400, code, f"{key} is in use by {other['id']} and cannot be deleted.")
        self.hub.resources[key]["properties"]["provisioningState"] = "Deleting"
        operation = self._operation(key, "delete", namespace, kind)
        status = self._status_url(operation, "operations")
        return Reply(
            202, None, {"Azure-AsyncOperation": status, "Location": status, "Retry-After": self.hub.retry_after}
        )

    def _operation(self, key: str, action: str, namespace: str, kind: str) -> Operation:
        operation = Operation(str(uuid.uuid4()), key, action, namespace, kind)
        self.hub.operations[operation.id] = operation
        return operation

    def _status_url(self, operation: Operation, collection: str) -> str:
        # Carries the provider's own API version, as ARM's status URLs do.
        return (
            f"{self.hub.url}/subscriptions/{self.hub.subscription_id}/providers/{operation.namespace}/locations/"
            f"{self.hub.location}/{collection}/{operation.id}?api-version={PROFILE[operation.namespace]}"
        )

    def _finish(self, operation: Operation) -> None:
        operation.done = True
        resource = self.hub.resources.get(operation.key)
        if resource is None:
            return
        if operation.action == "delete":
            for key in [k for k in self.hub.resources if k == operation.key or k.startswith(operation.key + "/")]:
                del self.hub.resources[key]  # children go with their parent (containers, extensions)
        else:
            resource["properties"]["provisioningState"] = "Failed" if operation.failure else "Succeeded"

    def operation_status(self, operation_id: str, collection: str) -> Reply:
        operation = self.hub.operations.get(operation_id)
        if operation is None:
            return _error(404, "OperationNotFound", operation_id)
        operation.polls += 1
        if not operation.done and operation.polls >= 2:
            self._finish(operation)
        retry = {"Retry-After": self.hub.retry_after}
        if collection == "asyncoperations":  # Location polling: 202 until done, then the resource
            if not operation.done:
                return Reply(202, None, {**retry, "Location": self._status_url(operation, collection)})
            if operation.key not in self.hub.resources:
                return Reply(204)
            return Reply(200, self._view(operation.key, operation.kind))
        if not operation.done:
            return Reply(200, {"status": "InProgress"}, retry)
        if operation.failure:
            code, message = operation.failure
            return Reply(200, {"status": "Failed", "error": {"code": code, "message": message}})
        return Reply(200, {"status": "Succeeded"})


@contextmanager
def serve_hub_arm(
    directory: Path,
    *,
    subscription_id: str = "00000000-0000-0000-0000-000000000001",
    resource_group: str = "rg-edge-training",
    location: str = "local",
    client_id: str = "hub-app-0c1b5c5e",
    client_secret: str = "hub-client-secret-value",  # noqa: S107 (the stand-in's own test principal)
) -> Iterator[HubArm]:
    hub_box: list[HubArm] = []

    def handle(method: str, raw_path: str, headers: dict[str, str], raw: bytes) -> Reply:
        hub = hub_box[0]
        if hub.latency_s:
            time.sleep(hub.latency_s)  # outside the lock: slow answers still overlap
        url = urlsplit(raw_path)
        body = _body(raw, headers.get("content-type", ""))
        with hub.lock:
            hub.requests.append(Recorded(method, url.path, parse_qs(url.query), headers, body))
            for fault in hub.faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(url.path):
                    fault.times -= 1
                    return fault.reply
            arm = handlers[0]
            if url.path == "/metadata/endpoints" and method == "GET":
                return arm.metadata(parse_qs(url.query))
            if url.path == "/adfs/.well-known/openid-configuration" and method == "GET":
                return arm.openid()
            if url.path == "/adfs/oauth2/token" and method == "POST":
                return arm.token(body)
            return arm.arm(method, url.path, parse_qs(url.query), headers, body)

    handlers: list[_Arm] = []

    with https_server(directory, handle, "hub-arm") as (url, ca_file):
        hub = HubArm(
            url=url,
            ca_file=ca_file,
            subscription_id=subscription_id,
            resource_group=resource_group,
            location=location,
            client_id=client_id,
            client_secret=client_secret,
        )
        hub_box.append(hub)
        handlers.append(_Arm(hub))
        yield hub


# --- a small engine: the program's HubArmResources, run through the provider in order ----------

HUB_ARM_TYPE = "pulumi-python:dynamic/edge-training:HubArmResource"


def _plain(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k != "__provider"}


class Engine:
    """What the Pulumi engine does with the provider, for the program's Hub resources: check,
    then create/diff/update/replace in dependency order, read on refresh, delete in reverse."""

    def __init__(self, provider: HubArmResourceProvider, hub: HubArm) -> None:
        self.provider, self.hub = provider, hub
        self.state: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (id, outputs)
        self.order: list[str] = []

    def declared(self, recording: Recording) -> list[tuple[str, dict[str, Any]]]:
        """The program's Hub resources in dependency order, their mock ids replaced by the ids the
        Hub gave the resources already created (as the engine resolves outputs)."""
        resources = recording.of_type(HUB_ARM_TYPE)
        urns = {r.urn: r for r in resources}

        def deps(resource: Any) -> set[str]:
            found = set(resource.dependencies) | {u for us in resource.property_dependencies.values() for u in us}
            expanded = set()
            for urn in found:
                if urn in urns:
                    expanded.add(urn)
                else:  # a component: its Hub resources
                    expanded |= {r.urn for r in resources if r.parent == urn}
            return expanded - {resource.urn}

        ordered: list[Any] = []
        pending = list(resources)
        while pending:
            ready = next(r for r in pending if deps(r) <= {o.urn for o in ordered})
            ordered.append(ready)
            pending.remove(ready)
        return [(r.name, _plain(r.inputs)) for r in ordered]

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, str):
            for name, (id_, _) in self.state.items():
                mock = f"{name}-id"
                if value == mock or value.startswith(mock + "/"):
                    return id_ + value[len(mock) :]
        return value

    def up(self, declared: list[tuple[str, dict[str, Any]]], endpoint: str) -> dict[str, str]:
        actions: dict[str, str] = {}
        for name, raw in declared:
            news = self._resolve({**raw, "armEndpoint": endpoint})
            checked = self.provider.check({}, news)
            assert checked.failures == [], [(f.property, f.reason) for f in checked.failures]
            if name not in self.state:
                created = self.provider.create(copy.deepcopy(news))
                self.state[name] = (created.id, created.outs or {})
                self.order.append(name)
                actions[name] = "create"
                continue
            id_, olds = self.state[name]
            diff = self.provider.diff(id_, olds, news)
            if diff.replaces:
                assert diff.delete_before_replace
                self.provider.delete(id_, olds)
                created = self.provider.create(copy.deepcopy(news))
                self.state[name] = (created.id, created.outs or {})
                actions[name] = "replace"
            elif diff.changes:
                updated = self.provider.update(id_, olds, copy.deepcopy(news))
                self.state[name] = (id_, updated.outs or {})
                actions[name] = "update"
            else:
                actions[name] = "same"
        return actions

    def refresh(self) -> dict[str, Any]:
        results = {}
        for name in self.order:
            id_, outs = self.state[name]
            read = self.provider.read(id_, outs)
            results[name] = read
            if read.id:
                self.state[name] = (read.id, read.outs or {})
        return results

    def destroy(self) -> None:
        for name in reversed(self.order):
            id_, outs = self.state.pop(name)
            self.provider.delete(id_, outs)
        self.order.clear()
