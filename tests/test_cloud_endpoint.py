"""`deploy --target cloud` through the real MLClient against the local HTTPS stand-in: traffic moves
to the new deployment only when it is healthy, and then all of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml._restclient.arm_ml_service import models as ml
from azure.ai.ml.entities import ManagedOnlineDeployment

from tests.harness.arm_models import rest_field_problems
from tests.harness.arm_server import ArmEndpoint, Reply, StaticCredential, serve_arm
from tests.test_image_build import stack_outputs
from tests.test_training_cli import RedirectingTransport
from training import cloud_endpoint
from training.stack_outputs import StackOutputs
from training.workspace import ml_client

OUTPUTS = StackOutputs.from_mapping(stack_outputs(), "test")
WS = (
    f"/subscriptions/{OUTPUTS.azureSubscriptionId}/resourceGroups/{OUTPUTS.resourceGroupName}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{OUTPUTS.workspaceName}"
)
EP = f"{WS}/onlineEndpoints/ep-edge-model"
IMAGE = f"{OUTPUTS.registryLoginServer}/edge-model@sha256:{'a' * 64}"


def endpoint(traffic: dict[str, int]) -> dict[str, Any]:
    return {
        "id": EP, "name": "ep-edge-model", "location": "westeurope", "identity": {"type": "SystemAssigned"},
        "properties": {"authMode": "Key", "provisioningState": "Succeeded", "traffic": traffic,
                       "scoringUri": "https://ep-edge-model.westeurope.inference.ml.azure.com/score"},
    }  # fmt: skip


def deployment(state: str) -> dict[str, Any]:
    return {
        "id": f"{EP}/deployments/v007", "name": "v007", "location": "westeurope",
        "sku": {"name": "Default", "capacity": 1},
        "properties": {"endpointComputeType": "Managed", "scaleSettings": {"scaleType": "Default"},
                       "provisioningState": state, "instanceType": "Standard_DS3_v2"},
    }  # fmt: skip


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[ArmEndpoint]:
    with serve_arm(tmp_path) as endpoint:
        endpoint.fake.script("GET", f"{EP}/deployments", Reply(200, {"value": []}))
        endpoint.fake.script(
            "GET",
            WS,
            Reply(200, {"id": WS, "name": OUTPUTS.workspaceName, "location": "westeurope", "kind": "Default",
                        "type": "Microsoft.MachineLearningServices/workspaces",
                        "properties": {"workspaceId": "00000000-0000-0000-0000-00000000000a",
                                       "discoveryUrl": "https://westeurope.api.azureml.ms/discovery"}}),
        )  # fmt: skip
        environment = {
            "id": f"{WS}/environments/CliV2AnonymousEnvironment/versions/1",
            "name": "1",
            "properties": {"image": IMAGE, "isAnonymous": True, "isArchived": False, "osType": "Linux"},
        }
        endpoint.fake.script_matching(
            "PUT", re.escape(WS) + "/environments/CliV2AnonymousEnvironment/versions/[0-9a-f]+", Reply(200, environment)
        )
        endpoint.fake.script("POST", f"{EP}/deployments/v007/getLogs", Reply(200, {"content": "ImportError: sklearn"}))
        yield endpoint


def script(arm: ArmEndpoint, state: str, after_traffic: dict[str, int], seen: str | None = None) -> None:
    """`state`: what the create answers; `seen`: what a read of the deployment then says."""
    before = endpoint({"v006": 100})
    arm.fake.script("GET", EP, *[Reply(200, before)] * 3, Reply(200, endpoint(after_traffic)))
    arm.fake.script("PUT", EP, Reply(200, endpoint(after_traffic)))
    arm.fake.script("PUT", f"{EP}/deployments/v007", Reply(200, deployment(state)))
    arm.fake.script("GET", f"{EP}/deployments/v007", Reply(200, deployment(seen or state)))


def client(arm: ArmEndpoint) -> Any:
    return ml_client(OUTPUTS, credential=StaticCredential(), transport=RedirectingTransport(arm))


def puts(arm: ArmEndpoint, path: str) -> list[Any]:
    return [r.body for r in arm.fake.requests if r.method == "PUT" and r.path == path]


def test_a_healthy_deployment_gets_all_the_traffic(arm) -> None:
    script(arm, "Succeeded", {"v007": 100})
    release = cloud_endpoint.deploy_online(client(arm), "edge-model", "7", image=IMAGE)
    assert release.deployment == "v007" and release.traffic == {"v007": 100}
    assert release.scoring_uri.endswith("/score")

    [switch] = puts(arm, EP)
    assert switch["properties"]["traffic"] == {"v007": 100}
    nested = {ml.OnlineEndpoint: {"properties": ml.OnlineEndpointProperties}}
    assert rest_field_problems(switch, ml.OnlineEndpoint, nested) == []
    [created] = puts(arm, f"{EP}/deployments/v007")
    assert rest_field_problems(created, ml.OnlineDeployment, {}) == []
    environment = next(r.body for r in arm.fake.requests if "/environments/" in r.path)
    assert environment["properties"]["image"] == IMAGE  # the image `package` built, by digest
    assert environment["properties"]["inferenceConfig"] == {
        "livenessRoute": {"path": "/", "port": 5001},
        "readinessRoute": {"path": "/", "port": 5001},
        "scoringRoute": {"path": "/score", "port": 5001},
    }
    # The switch comes after the new deployment was created and seen healthy.
    order = [(r.method, r.path) for r in arm.fake.requests]
    assert order.index(("PUT", f"{EP}/deployments/v007")) < order.index(("GET", f"{EP}/deployments/v007"))
    assert order.index(("GET", f"{EP}/deployments/v007")) < order.index(("PUT", EP))


@pytest.mark.parametrize(
    ("created", "state"), [("Failed", "Failed"), ("Canceled", "Canceled"), ("Succeeded", "Updating")]
)
def test_an_unhealthy_deployment_gets_no_traffic_and_its_logs_are_reported(arm, created, state) -> None:
    script(arm, created, {"v006": 100}, seen=state)
    with pytest.raises(cloud_endpoint.CloudDeployError) as caught:
        cloud_endpoint.deploy_online(client(arm), "edge-model", "7", image=IMAGE)
    assert f"v007 on ep-edge-model is {state}, not Succeeded" in str(caught.value)
    assert "traffic unchanged ({'v006': 100})" in str(caught.value) and "ImportError: sklearn" in str(caught.value)
    assert puts(arm, EP) == []


def test_a_deployment_the_service_refuses_gets_no_traffic(arm) -> None:
    script(arm, "Succeeded", {"v006": 100})
    refused = Reply(400, {"error": {"code": "BadArgument", "message": "instance type not allowed"}})
    arm.fake.script("PUT", f"{EP}/deployments/v007", refused)
    with pytest.raises(cloud_endpoint.CloudDeployError, match="instance type not allowed"):
        cloud_endpoint.deploy_online(client(arm), "edge-model", "7", image=IMAGE)
    assert puts(arm, EP) == []


def test_an_endpoint_left_at_zero_percent_is_an_error(arm) -> None:
    script(arm, "Succeeded", {"v006": 100, "v007": 0})
    with pytest.raises(cloud_endpoint.CloudDeployError, match="not 100% to v007"):
        cloud_endpoint.deploy_online(client(arm), "edge-model", "7", image=IMAGE)


@pytest.mark.parametrize(
    ("current", "expected"),
    [(None, {"v007": 100}), ({}, {"v007": 100}), ({"v006": 100}, {"v006": 0, "v007": 100}),
     ({"v005": 30, "v006": 70}, {"v005": 0, "v006": 0, "v007": 100}), ({"v007": 0}, {"v007": 100})],
)  # fmt: skip
def test_switched_traffic_sends_everything_to_the_new_deployment(current, expected) -> None:
    assert cloud_endpoint.switched_traffic(current, "v007") == expected


class State:
    def __init__(self, value: str) -> None:
        self.value = value


@pytest.mark.parametrize(
    ("state", "healthy"),
    [("Succeeded", True), (State("Succeeded"), True), ("Failed", False), (State("Updating"), False), (None, False),
     ("", False)],
)  # fmt: skip
def test_only_a_succeeded_deployment_is_healthy(state, healthy) -> None:
    read = ManagedOnlineDeployment(name="v007", endpoint_name="e")
    read._provisioning_state = state  # what the SDK sets from a read (enum or str)
    assert cloud_endpoint.is_healthy(read) is healthy


def test_without_an_image_the_environment_carries_the_inference_server() -> None:
    made = cloud_endpoint.deployment_of("ep-edge-model", "edge-model", "7", None, "Standard_DS3_v2")
    pip = made.environment.conda_file["dependencies"][-1]["pip"]
    assert "azureml-inference-server-http==1.5.1" in pip and "scikit-learn==1.9.1" in pip
    assert made.code_configuration.scoring_script == "score.py"
    assert made.model == "azureml:edge-model:7"


@pytest.mark.parametrize(("version", "name"), [("7", "v007"), ("12", "v012"), ("1234", "v1234"), ("rc.1", "v-rc-1")])
def test_deployment_names_are_valid(version, name) -> None:
    assert cloud_endpoint.deployment_name(version) == name
