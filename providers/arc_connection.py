"""Wait, through Azure Resource Manager, until an Arc-enabled cluster reports `Connected`.

Nothing connects to the Hub VM: its first boot installs K3s and the Arc agents, and the agents
call out to Azure. Whether that worked is visible only in Azure, as the connected cluster's
`properties.connectivityStatus` (Connecting, Connected, Offline, Expired, AgentNotInstalled;
Azure/azure-rest-api-specs, hybridkubernetes connectedClusters.json). The extension and the
compute need a connected cluster, so this resource sits between the cluster and them and polls
until `Connected`, or fails at its deadline naming the outbound endpoints the agents need.

The provider object is pickled into the state: it holds no client or credential; both are made
inside the methods: the credential from the ARM_* variables, like the azure-native provider, for
the audience the endpoint's own metadata names, and the client is clients/arm.py's (Retry-After
capped, timeouts on every call), the one the Hub resources use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from clients.arm import ArmClient, ArmError
from clients.cloud import PUBLIC
from clients.deadline import Deadline, poll_until

log = logging.getLogger(__name__)

# The stable Microsoft.Kubernetes version the cluster is declared at (components/edge_kubernetes.py)
# and read at here: the default of azure-mgmt-hybridkubernetes 2.0.0, whose models the tests use.
CONNECTED_CLUSTER_API_VERSION = "2026-05-01"
CONNECTED = "Connected"
EXTENSION_API_VERSION = "2023-05-01"  # Microsoft.KubernetesConfiguration, as components/edge_kubernetes.py declares it
# What each status means for the operator (connectedClusters.json, ConnectivityStatus; Microsoft
# Learn, "Azure Arc-enabled Kubernetes agent overview": a cluster whose agents have not reached
# Azure for 90 days is Expired and must be onboarded again).
STATUS_HINTS = {
    "Offline": "the Arc agents have not reached Azure recently: is the server VM up, and its outbound HTTPS allowed?",
    "Expired": "the agents were offline too long and their identity certificate expired: onboard again "
    "(raise arcOnboardingKeyRotation; docs/operate/day-two.md)",
}
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
REPLACE_ON = ("subscriptionId", "resourceGroupName", "clusterName", "armEndpoint")


def arc_outbound_endpoints(region: str) -> tuple[str, ...]:
    """What the Arc agents must reach on 443 (public Azure), from Microsoft's "Azure Arc-enabled
    Kubernetes network requirements" (MicrosoftDocs/azure-docs, articles/azure-arc/kubernetes/
    includes/network-requirements-azure-cloud.md)."""
    return (
        "management.azure.com",
        f"{region}.dp.kubernetesconfiguration.azure.com",
        "login.microsoftonline.com",
        f"{region}.login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "mcr.microsoft.com",
        "*.data.mcr.microsoft.com",
        "gbl.his.arc.azure.com",
        "*.his.arc.azure.com",
        "guestnotificationservice.azure.com",
        "*.guestnotificationservice.azure.com",
        "*.servicebus.windows.net (websockets)",
        "k8sconnectcsp.azureedge.net",
    )


class ArcConnectionError(RuntimeError):
    """The cluster did not connect, or Resource Manager refused to tell."""


@dataclass(frozen=True)
class ClusterRef:
    subscription_id: str
    resource_group: str
    name: str

    @property
    def path(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Kubernetes/connectedClusters/{self.name}"
        )


def _refused(ref: ClusterRef, error: ArmError) -> ArcConnectionError:
    return ArcConnectionError(
        f"reading connected cluster {ref.name} failed: HTTP {error.status} {error.code}: {error.message}"
    )


def wait_until_connected(
    client: ArmClient,
    ref: ClusterRef,
    region: str,
    deadline_seconds: float,
    poll_seconds: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the cluster until it is Connected and return it; fail at the deadline.

    Throttling and server errors that outlast the pipeline's own retries count as "not yet";
    any other refusal (no permission, no such resource group) fails at once with the service's
    message, because waiting will not change it."""
    deadline = Deadline(deadline_seconds, clock)
    last = ["never answered"]

    def probe() -> dict[str, Any] | None:
        try:
            cluster = client.get(ref.path, CONNECTED_CLUSTER_API_VERSION, deadline)
        except ArmError as error:
            if error.status not in TRANSIENT and error.code != "DeadlineExceeded":
                raise _refused(ref, error) from None
            last[0] = f"HTTP {error.status} ({error.code}: {error.message})"
            log.warning("reading connected cluster %s: %s; still waiting", ref.name, last[0])
            return None
        if cluster is None:
            raise ArcConnectionError(f"reading connected cluster {ref.name} failed: HTTP 404, no such cluster")
        status = str((cluster.get("properties") or {}).get("connectivityStatus") or "Unknown")
        last[0] = status
        return cluster if status == CONNECTED else None

    connected = poll_until(probe, deadline, poll_seconds, sleep)
    if connected is None:
        endpoints = "\n  ".join(arc_outbound_endpoints(region))
        raise ArcConnectionError(
            f"connected cluster {ref.name} is not Connected after {deadline_seconds:.0f}s (last: {last[0]}). "
            "The Arc agents on the Hub VM connect out to Azure; check that the VM finished first boot "
            "(/var/lib/edge-training/cluster-ready) and that the Hub network allows outbound HTTPS (443) to:\n  "
            + endpoints
        )
    return connected


class ArcConnectionProvider(ResourceProvider):
    """create waits; read reports the current status and any drift (`drift`: the cluster Offline or
    Expired, nodes at another Kubernetes version than declared, the extension failed or gone);
    delete has nothing to undo."""

    def _client(self, props: dict[str, Any]) -> ArmClient:
        from clients.cloud import discover
        from clients.credentials import credential_from_environment

        cloud = discover(props.get("armEndpoint") or PUBLIC.resource_manager)
        return ArmClient(cloud, credential_from_environment(cloud=cloud))

    def _clock(self) -> Callable[[], float]:
        return time.monotonic

    def _sleep(self) -> Callable[[float], None]:
        return time.sleep

    @staticmethod
    def _ref(props: dict[str, Any]) -> ClusterRef:
        return ClusterRef(props["subscriptionId"], props["resourceGroupName"], props["clusterName"])

    def _outs(self, props: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
        properties = cluster.get("properties") or {}
        return {
            **props,
            "connectivityStatus": properties.get("connectivityStatus"),
            "agentVersion": properties.get("agentVersion"),
            "kubernetesVersion": properties.get("kubernetesVersion"),
        }

    @staticmethod
    def drift(props: dict[str, Any], cluster: dict[str, Any], extension: dict[str, Any] | None) -> list[str]:
        """What `pulumi refresh` shows differs from what the stack declared, one line each."""
        found = []
        properties = cluster.get("properties") or {}
        status = properties.get("connectivityStatus")
        if status != CONNECTED:
            found.append(f"cluster is {status}: {STATUS_HINTS.get(str(status), 'not Connected')}")
        wanted, running = props.get("k3sVersion"), properties.get("kubernetesVersion")
        # Arc reports the API server's version; K3s's carries its "+k3sN" suffix. Compared without the "v".
        if wanted and running and str(running).lstrip("v") != str(wanted).lstrip("v"):
            found.append(
                f"the nodes run Kubernetes {running}, the stack declares K3s {wanted}: "
                "run pulumi up to finish the upgrade (docs/operate/day-two.md)"
            )
        if props.get("extensionName") and extension is None:
            found.append(f"extension {props['extensionName']} is gone from the cluster")
        elif extension is not None:
            state = (extension.get("properties") or {}).get("provisioningState")
            if state not in (None, "Succeeded"):
                found.append(f"extension {props['extensionName']} is {state}")
        return found

    def create(self, props: dict[str, Any]) -> CreateResult:
        ref = self._ref(props)
        with self._client(props) as client:
            cluster = wait_until_connected(
                client,
                ref,
                region=props["location"],
                deadline_seconds=float(props["deadlineSeconds"]),
                poll_seconds=float(props.get("pollSeconds") or 15),
                clock=self._clock(),
                sleep=self._sleep(),
            )
        return CreateResult(id_=cluster.get("id") or ref.path, outs=self._outs(props, cluster))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A cluster that is another resource must be waited for again; anything else (the
        # deadline) only matters while waiting.
        replaces = [k for k in REPLACE_ON if olds.get(k) != news.get(k)]
        others = [
            k
            for k in ("deadlineSeconds", "pollSeconds", "location", "k3sVersion", "extensionName")
            if olds.get(k) != news.get(k)
        ]
        return DiffResult(changes=bool(replaces or others), replaces=replaces)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**olds, **news})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        ref = self._ref(props)
        with self._client(props) as client:
            try:
                cluster = client.get(ref.path, CONNECTED_CLUSTER_API_VERSION)
            except ArmError as error:
                raise _refused(ref, error) from None
            if cluster is None:
                return ReadResult(id_=None, outs={})
            extension = None
            if props.get("extensionName"):
                path = f"{ref.path}/providers/Microsoft.KubernetesConfiguration/extensions/{props['extensionName']}"
                try:
                    extension = client.get(path, EXTENSION_API_VERSION)
                except ArmError as error:
                    raise _refused(ref, error) from None
        drift = self.drift(props, cluster, extension)
        for line in drift:
            log.warning("connected cluster %s: %s", ref.name, line)
        return ReadResult(id_=id_, outs={**self._outs(props, cluster), "drift": drift})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Waiting leaves nothing behind; the cluster is deleted by its own resource."""


@dataclass(frozen=True)
class ArcConnectionArgs:
    subscription_id: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    location: pulumi.Input[str]
    deadline_seconds: int = 1800
    arm_endpoint: str = PUBLIC.resource_manager
    k3s_version: str | None = None
    """What the nodes should run: a refresh reports a cluster whose Kubernetes version differs."""
    extension_name: str | None = None
    """The Azure ML extension on the cluster: a refresh reports it when it failed or is gone."""


class ArcConnection(pulumi.dynamic.Resource, module="edge-training", name="ArcConnection"):
    """Done when the connected cluster reports Connected."""

    def __init__(
        self,
        name: str,
        args: ArcConnectionArgs,
        opts: pulumi.ResourceOptions | None = None,
        provider: ArcConnectionProvider | None = None,
    ) -> None:
        props = {
            "subscriptionId": args.subscription_id,
            "resourceGroupName": args.resource_group_name,
            "clusterName": args.cluster_name,
            "location": args.location,
            "deadlineSeconds": args.deadline_seconds,
            "armEndpoint": args.arm_endpoint,
            "k3sVersion": args.k3s_version,
            "extensionName": args.extension_name,
            "connectivityStatus": None,
            "drift": None,
            "agentVersion": None,
            "kubernetesVersion": None,
        }
        super().__init__(provider or ArcConnectionProvider(), name, props, opts)

    @property
    def connectivity_status(self) -> pulumi.Output[str]:
        return self.__dict__["connectivityStatus"]
