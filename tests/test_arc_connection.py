"""The wait for `connectivityStatus == Connected`, through the real azure-core pipeline against a
local HTTPS Resource Manager, with an injected clock (nothing really waits)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from azure.mgmt.hybridkubernetes import models as arc_models

from clients.arm import ArmClient
from clients.cloud import Cloud
from clients.deadline import LAST_LOOK_S
from providers import arc_connection
from providers.arc_connection import (
    CONNECTED_CLUSTER_API_VERSION,
    ArcConnectionError,
    ArcConnectionProvider,
    ClusterRef,
    wait_until_connected,
)
from tests.harness.arm_server import (
    SOVEREIGN_AUDIENCE,
    TEST_TOKEN,
    ArmEndpoint,
    RecordingTransport,
    Reply,
    StaticCredential,
)
from tests.harness.clock import FakeClock

REF = ClusterRef("11111111-1111-1111-1111-111111111111", "rg-edge", "arc-edge-dev")
REGION = "westeurope"


def local_cloud(arm: ArmEndpoint) -> Cloud:
    """The local endpoint as a cloud whose metadata would name public Azure's audience."""
    return Cloud(arm.url + "/", "https://login.microsoftonline.com/", "https://management.core.windows.net/")


def cluster(status: str) -> dict[str, Any]:
    return {
        "id": REF.path,
        "name": REF.name,
        "location": REGION,
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "agentPublicKeyCertificate": "MIIB",
            "provisioningState": "Succeeded",
            "connectivityStatus": status,
            "agentVersion": "1.31.2",
        },
    }


def test_the_stand_in_answers_what_microsofts_model_reads() -> None:
    # The scripted replies are bodies the 2026-05-01 model understands, with a status it knows.
    model = arc_models.ConnectedCluster(cluster("Connected"))
    assert model.properties.connectivity_status == arc_models.ConnectivityStatus.CONNECTED
    assert {s.value for s in arc_models.ConnectivityStatus} >= {"Connecting", "Connected", "Offline"}


@pytest.fixture
def transport(arm: ArmEndpoint) -> RecordingTransport:
    return arm.transport()


@pytest.fixture
def client(arm: ArmEndpoint, transport: RecordingTransport) -> Iterator[ArmClient]:
    with ArmClient(local_cloud(arm), StaticCredential(), transport=transport) as c:
        yield c


def test_waits_until_connected_reading_the_cluster_at_its_api_version(arm: ArmEndpoint, client: ArmClient) -> None:
    arm.fake.script(
        "GET",
        REF.path,
        Reply(200, cluster("Connecting")),
        Reply(200, cluster("Connecting")),
        Reply(200, cluster("Connected")),
    )
    clock = FakeClock(1000.0)
    result = wait_until_connected(client, REF, REGION, 600, poll_seconds=15, clock=clock, sleep=clock.sleep)
    assert result["properties"]["connectivityStatus"] == "Connected"
    assert clock.sleeps == [15, 15]
    assert len(arm.fake.requests) == 3
    for request in arm.fake.requests:
        assert request.query["api-version"] == [CONNECTED_CLUSTER_API_VERSION]
        assert request.headers["authorization"] == f"Bearer {TEST_TOKEN}"


def test_never_connected_fails_at_the_deadline_naming_the_endpoints(arm: ArmEndpoint, client: ArmClient) -> None:
    arm.fake.script("GET", REF.path, Reply(200, cluster("Connecting")))
    clock = FakeClock(1000.0)
    with pytest.raises(ArcConnectionError) as caught:
        wait_until_connected(client, REF, REGION, 100, poll_seconds=30, clock=clock, sleep=clock.sleep)
    message = str(caught.value)
    assert "not Connected after 100s (last: Connecting)" in message
    for endpoint in (
        "management.azure.com",
        f"{REGION}.dp.kubernetesconfiguration.azure.com",
        "*.servicebus.windows.net",
        "mcr.microsoft.com",
        "*.his.arc.azure.com",
    ):
        assert endpoint in message
    # The deadline is kept: the last wait is shortened so the last look comes LAST_LOOK_S before it.
    assert clock.sleeps == [30, 30, 30, 10 - LAST_LOOK_S]
    assert clock.now == 1100 - LAST_LOOK_S


def test_throttling_and_server_errors_are_retried(
    arm: ArmEndpoint, client: ArmClient, transport: RecordingTransport
) -> None:
    arm.fake.script(
        "GET",
        REF.path,
        Reply(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "7"}),
        Reply(503, {"error": {"code": "ServiceUnavailable", "message": "try later"}}),
        Reply(200, cluster("Connected")),
    )
    clock = FakeClock(1000.0)
    wait_until_connected(client, REF, REGION, 600, clock=clock, sleep=clock.sleep)
    assert len(arm.fake.requests) == 3
    assert transport.slept[0] == 7  # Retry-After honoured by azure-core's retry policy
    assert clock.sleeps == []  # retried inside the pipeline, not by the poll loop


def test_errors_that_outlast_the_retries_count_as_not_yet(arm: ArmEndpoint, transport: RecordingTransport) -> None:
    arm.fake.script(
        "GET",
        REF.path,
        Reply(500, {"error": {"code": "InternalServerError", "message": "boom"}}),
        Reply(500, {"error": {"code": "InternalServerError", "message": "boom"}}),
        Reply(200, cluster("Connected")),
    )
    clock = FakeClock(1000.0)
    with ArmClient(local_cloud(arm), StaticCredential(), transport=transport, retry_total=0) as client:
        wait_until_connected(client, REF, REGION, 600, poll_seconds=5, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [5, 5]


def test_a_refusal_fails_at_once_with_the_services_message(arm: ArmEndpoint, client: ArmClient) -> None:
    arm.fake.script("GET", REF.path, Reply(403, {"error": {"code": "AuthorizationFailed", "message": "no read"}}))
    clock = FakeClock(1000.0)
    with pytest.raises(ArcConnectionError, match="HTTP 403 AuthorizationFailed: no read"):
        wait_until_connected(client, REF, REGION, 600, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [] and len(arm.fake.requests) == 1


class LocalProvider(ArcConnectionProvider):
    """The real provider, pointed at the local endpoint, with the fake clock."""

    def __init__(self, arm: ArmEndpoint, clock: FakeClock) -> None:
        self.arm, self.clock = arm, clock

    def _client(self, props: dict[str, Any]) -> ArmClient:
        return ArmClient(local_cloud(self.arm), StaticCredential(), transport=self.arm.transport())

    def _clock(self) -> Any:
        return self.clock

    def _sleep(self) -> Any:
        return self.clock.sleep


PROPS = {
    "subscriptionId": REF.subscription_id,
    "resourceGroupName": REF.resource_group,
    "clusterName": REF.name,
    "location": REGION,
    "deadlineSeconds": 900,
    "armEndpoint": "https://management.azure.com/",
}


def test_the_provider_creates_once_connected_and_refresh_reads_the_status(arm: ArmEndpoint) -> None:
    arm.fake.script(
        "GET",
        REF.path,
        Reply(200, cluster("Connecting")),
        Reply(200, cluster("Connected")),
        Reply(200, cluster("Offline")),
    )
    provider = LocalProvider(arm, FakeClock(1000.0))
    created = provider.create(dict(PROPS))
    assert created.id == REF.path
    assert created.outs["connectivityStatus"] == "Connected"
    assert created.outs["agentVersion"] == "1.31.2"
    refreshed = provider.read(created.id, created.outs)
    assert refreshed.outs["connectivityStatus"] == "Offline"


def test_the_provider_diff_waits_again_only_for_another_cluster() -> None:
    provider = ArcConnectionProvider()
    assert provider.diff("id", PROPS, dict(PROPS)).changes is False
    assert provider.diff("id", PROPS, {**PROPS, "clusterName": "other"}).replaces == ["clusterName"]
    assert provider.diff("id", PROPS, {**PROPS, "deadlineSeconds": 60}).replaces == []


def test_the_pickled_provider_holds_no_client_or_credential() -> None:
    state = pickle.dumps(ArcConnectionProvider())
    assert b"credential" not in state.lower() and b"ArmClient" not in state
    assert arc_connection.ArcConnectionProvider.__dict__.get("__init__") is None


def test_the_provider_signs_in_for_the_audience_the_endpoints_metadata_names(sovereign_arm: ArmEndpoint) -> None:
    """Its own client, as `pulumi up` makes it: the ARM_* variables, and the token scope read from
    the endpoint's metadata, never public Azure's (issue 11)."""
    sovereign_arm.fake.script("GET", REF.path, Reply(200, cluster("Offline")))
    refreshed = ArcConnectionProvider().read(REF.path, {**PROPS, "armEndpoint": sovereign_arm.url})
    assert refreshed.outs["connectivityStatus"] == "Offline"
    token = next(r for r in sovereign_arm.fake.requests if r.method == "POST")
    assert token.body["scope"] == SOVEREIGN_AUDIENCE + ".default"
    (read,) = [r for r in sovereign_arm.fake.requests if r.path == REF.path]
    assert read.headers["authorization"] == f"Bearer {TEST_TOKEN}"


EXTENSION_PATH = f"{REF.path}/providers/Microsoft.KubernetesConfiguration/extensions/azureml"


def test_refresh_reports_an_offline_cluster_nodes_at_another_version_and_a_failed_extension(arm: ArmEndpoint) -> None:
    """Day two's drift, as `pulumi refresh` reads it: each difference one line of `drift`."""
    drifted = cluster("Offline")
    drifted["properties"]["kubernetesVersion"] = "v1.35.4+k3s1"
    failed = {"id": EXTENSION_PATH, "name": "azureml", "properties": {"provisioningState": "Failed"}}
    arm.fake.script("GET", REF.path, Reply(200, drifted))
    arm.fake.script("GET", EXTENSION_PATH, Reply(200, failed))
    props = {**PROPS, "k3sVersion": "v1.36.2+k3s1", "extensionName": "azureml"}
    refreshed = LocalProvider(arm, FakeClock(1000.0)).read(REF.path, props)
    assert refreshed.outs["connectivityStatus"] == "Offline"
    drift = refreshed.outs["drift"]
    assert len(drift) == 3, drift
    assert drift[0].startswith("cluster is Offline: the Arc agents have not reached Azure")
    assert "the nodes run Kubernetes v1.35.4+k3s1, the stack declares K3s v1.36.2+k3s1" in drift[1]
    assert drift[2] == "extension azureml is Failed"
    (read,) = [r for r in arm.fake.requests if r.path == EXTENSION_PATH]
    assert read.query["api-version"] == ["2023-05-01"]


def test_refresh_reports_an_expired_cluster_and_a_vanished_extension_and_nothing_when_all_is_well(
    arm: ArmEndpoint,
) -> None:
    expired = cluster("Expired")
    expired["properties"]["kubernetesVersion"] = "1.36.2+k3s1"  # the same version, without the "v"
    arm.fake.script("GET", REF.path, Reply(200, expired), Reply(200, cluster("Connected")))
    props = {**PROPS, "k3sVersion": "v1.36.2+k3s1", "extensionName": "azureml"}
    provider = LocalProvider(arm, FakeClock(1000.0))
    drift = provider.read(REF.path, props).outs["drift"]
    assert drift[0].startswith("cluster is Expired: the agents were offline too long")
    assert drift[1:] == ["extension azureml is gone from the cluster"]  # 404: the stand-in has none
    arm.fake.script("GET", EXTENSION_PATH, Reply(200, {"properties": {"provisioningState": "Succeeded"}}))
    assert provider.read(REF.path, props).outs["drift"] == []


def test_a_new_expected_version_updates_the_wait_in_place() -> None:
    diff = ArcConnectionProvider().diff("id", PROPS, {**PROPS, "k3sVersion": "v1.36.3+k3s1"})
    assert diff.changes and diff.replaces == []
