"""Where the pipelines talk to the Hub: `pulumi up` on a self-hosted runner inside the operator's
network, chosen by labels; `pulumi preview` on GitHub's runners, because it sends the Hub nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from providers.hub_arm_resource import HubArmResourceProvider
from providers.hub_blob_container import HubBlobContainerProvider
from tests.conftest import ROOT, recorded_stack
from tests.harness.hub_arm import HubArm, serve_hub_arm

WORKFLOWS = ROOT / ".github" / "workflows"
LABELS = re.compile(r"\$\{\{ fromJSON\(vars\.HUB_RUNNER_LABELS \|\| '(?P<default>\[.*\])'\) \}\}")


def test_pulumi_up_runs_on_the_self_hosted_runner_the_labels_variable_names() -> None:
    up = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())["jobs"]["up"]
    match = LABELS.fullmatch(up["runs-on"])
    assert match, up["runs-on"]
    default = json.loads(match["default"])
    assert default[0] == "self-hosted" and "linux" in default  # GitHub's documented runner labels
    assert up["environment"] == "production"


def test_preview_stays_on_githubs_runners() -> None:
    preview = yaml.safe_load((WORKFLOWS / "pull-request.yml").read_text())["jobs"]["preview"]
    assert preview["runs-on"] == "ubuntu-24.04"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubArm]:
    with serve_hub_arm(tmp_path) as stand_in:
        yield stand_in


def test_a_preview_sends_the_hub_nothing(hub: HubArm) -> None:
    """What the engine asks the Hub providers during `pulumi preview`: check and diff, for every
    Hub resource of the program (the first preview, and one against a deployed state)."""
    recording = recorded_stack({"hubIdentityProvider": "adfs", "hubTenantId": None})
    providers = {
        "pulumi-python:dynamic/edge-training:HubArmResource": HubArmResourceProvider(),
        "pulumi-python:dynamic/edge-training:HubBlobContainer": HubBlobContainerProvider(),
    }
    previewed = 0
    for type_, provider in providers.items():
        for resource in recording.of_type(type_):
            news = {k: v for k, v in resource.inputs.items() if k != "__provider"} | {"armEndpoint": hub.url}
            provider.check({}, news)
            provider.diff("id", news, news)
            provider.diff("id", {**news, "tags": {"owner": "someone"}}, news)
            previewed += 1
    assert previewed >= 7
    assert hub.requests == []
