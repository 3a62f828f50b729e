"""Run the real Pulumi program under `pulumi.runtime.set_mocks` and record what it declares.

The recording monitor sees each RegisterResource request as the engine would: type, name, inputs,
provider reference, parent, dependencies, and which inputs travel as secrets. Tests assert on it.
"""

from __future__ import annotations

import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
PROJECT = "edge-training"
SECRET_SIG = (rpc._special_sig_key, rpc._special_secret_sig)

FAKE_SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"
FAKE_TENANT = "22222222-2222-2222-2222-222222222222"
FAKE_PRINCIPAL = "33333333-3333-3333-3333-333333333333"
# The workspace's user-assigned identity: a principal of its own, so a test can tell whose it is.
FAKE_IDENTITY_PRINCIPAL = "55555555-5555-5555-5555-555555555555"
FAKE_IDENTITY_CLIENT = "66666666-6666-6666-6666-666666666666"
FAKE_COMPUTE_PRINCIPAL = "44444444-4444-4444-4444-444444444444"
FAKE_RELAY_CONNECTION_STRING = (
    "Endpoint=sb://relay.servicebus.windows.net/;SharedAccessKeyName=azureml_rw;"
    "SharedAccessKey=RELAY-SECRET-KEY-FOR-TESTS;EntityPath=arc-edge-dev"
)
_SECRETS_CACHE: dict[str, Any] = {}


def preset_cluster_secrets(outs: Mapping[str, Any]) -> None:
    """Use `outs`, what ClusterSecretsProvider.create returned elsewhere, instead of creating them.

    For bench/program_eval.py: in a real deployment the provider host makes the key once, on
    create, and never while the program evaluates; the benchmark makes it once in its parent.
    """
    _SECRETS_CACHE.clear()
    _SECRETS_CACHE.update(outs)


def _cluster_secrets(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """What ClusterSecretsProvider.create returns, from the provider itself (once per session)."""
    if not _SECRETS_CACHE:
        from providers.cluster_secrets import ClusterSecretsProvider

        _SECRETS_CACHE.update(ClusterSecretsProvider().create(dict(inputs)).outs)
    return {k: _SECRETS_CACHE[k] for k in ("onboardingPrivateKey", "agentPublicKeyCertificate", "joinToken")}


# Outputs the cloud would compute, by resource type, for resources whose outputs the program
# reads. Inputs are echoed back for everything; these add what Azure would fill in.
OutputFake = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
OUTPUT_FAKES: dict[str, OutputFake] = {
    "azure-native:containerregistry:Registry": lambda name, inputs: {
        "loginServer": f"{inputs['registryName'].lower()}.azurecr.io"
    },
    "azure-native:machinelearningservices:Workspace": lambda name, inputs: {
        "identity": _identity_outputs(inputs.get("identity") or {})
    },
    "azure-native:managedidentity:UserAssignedIdentity": lambda name, inputs: {
        "principalId": FAKE_IDENTITY_PRINCIPAL,
        "clientId": FAKE_IDENTITY_CLIENT,
        "tenantId": FAKE_TENANT,
    },
    "pulumi-python:dynamic/edge-training:HubArmResource": lambda name, inputs: _hub_resource_outputs(inputs),
    # What the attach provider's create returns.
    # Kubernetes mode: the real key and token generator (cached: a 4096-bit key takes a while),
    # the wait's answer for a connected cluster, and the compute's identity.
    "pulumi-python:dynamic/edge-training:ClusterSecrets": lambda name, inputs: _cluster_secrets(inputs),
    "pulumi-python:dynamic/edge-training:ArcConnection": lambda name, inputs: {
        "connectivityStatus": "Connected",
        "agentVersion": "1.31.3",
    },
    "azure-native:machinelearningservices:Compute": lambda name, inputs: {
        "identity": {**inputs.get("identity", {}), "principalId": FAKE_COMPUTE_PRINCIPAL, "tenantId": FAKE_TENANT}
    },
    "pulumi-python:dynamic/edge-training:EdgeCompute": lambda name, inputs: {
        "computeId": (
            f"/subscriptions/{inputs['subscriptionId']}/resourceGroups/{inputs['resourceGroupName']}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{inputs['workspaceName']}/computes/{inputs['computeName']}"
        ),
        "hostKeyFingerprint": "SHA256:" + "F" * 43,
        "provisioningState": "Succeeded",
    },
}


def _identity_outputs(identity: Mapping[str, Any]) -> dict[str, Any]:
    """What Resource Manager answers for a managed identity: user-assigned identities come back as
    a map from resource id to the identity's principal and client ids, not the list sent."""
    out: dict[str, Any] = {**identity, "tenantId": FAKE_TENANT}
    if "SystemAssigned" in str(identity.get("type", "")):
        out["principalId"] = FAKE_PRINCIPAL
    if ids := identity.get("userAssignedIdentities"):
        out["userAssignedIdentities"] = {
            i: {"principalId": FAKE_IDENTITY_PRINCIPAL, "clientId": FAKE_IDENTITY_CLIENT} for i in ids
        }
    return out


# The input that carries an azure-native resource's own name, which Azure echoes as `name`.
NAME_INPUTS = (
    # The child's own name before its parents' (a compute also names its workspace).
    "computeName",
    "extensionName",
    "authorizationRuleName",
    "hybridConnectionName",
    "namespaceName",
    "accountName",
    "registryName",
    "workspaceName",
    "vaultName",
    "resourceName",
    "roleAssignmentName",
    "networkSecurityGroupName",
)
# Results of provider functions (invokes), by token.
CALL_FAKES: dict[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
    "azure-native:authorization:getClientConfig": lambda _args: {
        "subscriptionId": FAKE_SUBSCRIPTION,
        "tenantId": FAKE_TENANT,
        "objectId": FAKE_PRINCIPAL,
        "clientId": FAKE_PRINCIPAL,
    },
    "azure-native:relay:listHybridConnectionKeys": lambda _args: {
        "primaryConnectionString": FAKE_RELAY_CONNECTION_STRING,
        "primaryKey": "RELAY-SECRET-KEY-FOR-TESTS",
        "keyName": "azureml_rw",
    },
}


FAKE_PUBLIC_IP = "192.0.2.10"


def _hub_resource_outputs(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the Hub ARM provider's create returns: Resource Manager's view of the properties."""
    properties = dict(inputs.get("properties") or {})
    if inputs.get("resourceType") == "storageAccounts":
        properties["primaryEndpoints"] = {"blob": f"https://{inputs['resourceName']}.blob.local.azurestack.external/"}
    elif inputs.get("resourceType") == "publicIPAddresses":
        properties["ipAddress"] = FAKE_PUBLIC_IP
    return {"observedProperties": properties}


@dataclass
class Resource:
    type: str
    name: str
    urn: str
    id: str
    custom: bool
    inputs: dict[str, Any]
    provider: str
    """The provider reference, `<provider urn>::<provider id>`, or "" for the default provider."""
    parent: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    secret_inputs: frozenset[str]
    """Top-level input names whose value (or some part of it) is a secret."""
    delete_before_replace: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    """What the resource registered with register_outputs (components)."""
    additional_secret_outputs: list[str] = field(default_factory=list)
    raw_inputs: dict[str, Any] = field(default_factory=dict)
    """The inputs with Pulumi's secret markers where the engine would see them (nested, too)."""
    ignore_changes: list[str] = field(default_factory=list)
    """Inputs whose changes the engine ignores on this resource (`ignore_changes`)."""

    @property
    def provider_urn(self) -> str:
        return self.provider.rsplit("::", 1)[0] if self.provider else ""


@dataclass(frozen=True)
class Export:
    value: Any
    secret: bool


@dataclass
class Recording:
    resources: list[Resource]
    exports: dict[str, Export]

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Resource:
        found = self.of_type(type_)
        if len(found) != 1:
            raise AssertionError(f"expected one {type_}, found {len(found)}: {[r.name for r in found]}")
        return found[0]

    def by_urn(self, urn: str) -> Resource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise KeyError(urn)

    def children_of(self, parent: Resource) -> list[Resource]:
        return [r for r in self.resources if r.parent == parent.urn]


def is_secret_marker(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1]


def _unwrap_secrets(value: Any) -> Any:
    """Inputs as plain values; which ones were secret is kept in `Resource.secret_inputs`."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return _unwrap_secrets(value.get("value"))
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


def _contains_secret(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return True
        return any(_contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(v) for v in value)
    return False


class _FakeCloud(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ.startswith("azure-native:") and "name" not in state:
            own = [state[k] for k in NAME_INPUTS if k in state]
            if args.typ == "azure-native:resources:ResourceGroup":
                own = [state.get("resourceGroupName", args.name)]
            state["name"] = own[0] if own else args.name
        fake = OUTPUT_FAKES.get(args.typ)
        if fake is not None:
            state.update(fake(args.name, args.inputs))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        fake = CALL_FAKES.get(args.token)
        if fake is None:
            raise AssertionError(f"the program invoked {args.token}, which the test harness does not fake")
        return dict(fake(args.args))


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self) -> None:
        super().__init__(_FakeCloud())
        self.recorded: list[Resource] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object)
            self.recorded.append(
                Resource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    id=response.id,
                    custom=bool(request.custom),
                    inputs=_unwrap_secrets(rpc.deserialize_properties(request.object)),
                    provider=request.provider,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                    secret_inputs=frozenset(k for k, v in raw.items() if _contains_secret(v)),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    raw_inputs=rpc.deserialize_properties(request.object),
                    ignore_changes=list(request.ignoreChanges),
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs = rpc.deserialize_properties(request.outputs)
        for resource in self.recorded:
            if resource.urn == request.urn:
                resource.outputs = outputs
        return super().RegisterResourceOutputs(request)


def run_program(
    config: Mapping[str, Any],
    *,
    secret_keys: tuple[str, ...] = (),
    stack: str = "dev",
    preview: bool = False,
    main: Path = MAIN,
) -> Recording:
    """Run `main` under mocks with `config` (keys without the project prefix) and record it.

    Exceptions the program raises propagate; what it registered before is in `monitor.recorded`.
    """
    monitor = RecordingMonitor()
    settings.set_root_resource(None)  # type: ignore[arg-type]  # a fresh stack for every run
    pulumi.runtime.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{k}": v for k, v in config.items()},
        [f"{PROJECT}:{k}" for k in secret_keys],
    )
    exports: dict[str, Export] = {}

    async def collect_exports() -> None:
        root = settings.get_root_resource()
        for name, value in getattr(root, "outputs", {}).items():
            output = pulumi.Output.from_input(value)
            exports[name] = Export(await output.future(), bool(await output.is_secret()))

    def program() -> Any:
        runpy.run_path(str(main), run_name="__pulumi_main__")
        return collect_exports()

    last = LastRun.monitor = monitor
    _sync_await(run_pulumi_func(program))
    return Recording(resources=list(last.recorded), exports=exports)


class LastRun:
    """The monitor of the latest run, so a test can see what was registered before a failure."""

    monitor: RecordingMonitor | None = None
