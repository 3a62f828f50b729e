"""Who signs in where: the training CLI's MLClient takes the same ARM_* variables as the attach
step and the azure-native provider (clients/credentials.py), not a bare DefaultAzureCredential,
which reads AZURE_* only and finds nothing in the deploy workflow."""

from __future__ import annotations

import dataclasses
import os

import pytest
from azure.identity import ClientAssertionCredential, DefaultAzureCredential

from clients.credentials import CredentialConfigError
from training.stack_outputs import StackOutputs
from training.workspace import ml_client

CLIENT = "0c1b5c5e-4a4d-4f8e-9d6b-111111111111"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def outputs() -> StackOutputs:
    values = {f.name: f.name for f in dataclasses.fields(StackOutputs)}
    values["azureSubscriptionId"] = "11111111-1111-1111-1111-111111111111"
    return StackOutputs(**values)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith(("ARM_", "AZURE_", "ACTIONS_ID_TOKEN"))]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_the_cli_signs_in_with_the_workflows_oidc_variables(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ARM_USE_OIDC": "true",
        "ARM_CLIENT_ID": CLIENT,
        "ARM_TENANT_ID": TENANT,
        "ARM_OIDC_TOKEN": "github-federated-jwt",
    }.items():
        clean_env.setenv(name, value)
    credential = ml_client(outputs())._credential
    assert isinstance(credential, ClientAssertionCredential)
    assert credential._client._client_id == CLIENT


def test_the_cli_names_incomplete_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ARM_USE_OIDC", "true")
    clean_env.setenv("ARM_CLIENT_ID", CLIENT)
    with pytest.raises(CredentialConfigError, match="ARM_TENANT_ID"):
        ml_client(outputs())


def test_a_laptop_without_variables_uses_the_default_chain(clean_env: pytest.MonkeyPatch) -> None:
    assert isinstance(ml_client(outputs())._credential, DefaultAzureCredential)
