"""The Hub's registry credential under Pulumi mocks: pull on one repository, nothing else, and no
password anywhere in the program's state."""

from __future__ import annotations

import json

import pytest

from components.registry_pull_token import pull_actions
from tests.harness.pulumi_mocks import Recording

SCOPE_MAP = "azure-native:containerregistry:ScopeMap"
TOKEN = "azure-native:containerregistry:Token"
COMPONENT = "edge-training:cloud:RegistryPullToken"


@pytest.fixture(scope="module")
def recording() -> Recording:
    from tests.conftest import recorded_stack

    return recorded_stack()


def test_the_scope_map_grants_pull_on_the_model_repository_only(recording) -> None:
    scope_map = recording.one(SCOPE_MAP).inputs
    assert scope_map["actions"] == ["repositories/edge-model/content/read", "repositories/edge-model/metadata/read"]
    registry = recording.one("azure-native:containerregistry:Registry")
    assert scope_map["registryName"] == registry.inputs["registryName"]


def test_the_token_is_bound_to_that_scope_map_and_carries_no_password(recording) -> None:
    token = recording.one(TOKEN)
    scope_map = recording.one(SCOPE_MAP)
    assert token.inputs["scopeMapId"] == scope_map.id
    assert token.inputs["status"] == "enabled"
    assert "credentials" not in token.inputs  # passwords are generated on request at deploy time
    ours = [token.inputs, scope_map.inputs, recording.one(COMPONENT).outputs]
    assert "password" not in json.dumps(ours).lower()
    assert not [k for k in recording.exports if "password" in k.lower()]


def test_the_token_uses_the_public_azure_provider_and_sits_in_its_component(recording) -> None:
    component = recording.one(COMPONENT)
    workspace = recording.one("azure-native:machinelearningservices:Workspace")
    for resource in (recording.one(SCOPE_MAP), recording.one(TOKEN)):
        assert resource.parent == component.urn
        assert resource.provider_urn == workspace.provider_urn != ""
    assert recording.one(TOKEN).inputs["tokenName"] == recording.one(SCOPE_MAP).inputs["scopeMapName"] == "edge-pull"
    assert component.outputs["tokenName"] == recording.exports["registryPullTokenName"].value


def test_the_cli_gets_the_token_name_and_id(recording) -> None:
    assert recording.exports["registryPullTokenId"].value == recording.one(TOKEN).id


@pytest.mark.parametrize("name", ["Edge-Model", "edge model", "", "a//b", "-edge"])
def test_a_repository_that_is_not_a_registry_name_is_refused(name) -> None:
    with pytest.raises(ValueError, match="is not a registry repository name"):
        pull_actions(name)


def test_pull_actions_are_exactly_read_and_metadata_read() -> None:
    assert pull_actions("team/edge-model") == [
        "repositories/team/edge-model/content/read",
        "repositories/team/edge-model/metadata/read",
    ]
