"""The Azure ML client for the stack's workspace."""

from __future__ import annotations

from typing import Any

from azure.ai.ml import MLClient

from clients.credentials import credential_from_environment
from training.stack_outputs import StackOutputs


def ml_client(outputs: StackOutputs, credential: Any = None, **kwargs: Any) -> MLClient:
    """`credential` defaults to the one the ARM_* variables describe, the variables the
    azure-native provider and the deploy workflow use (clients/credentials.py), falling back to
    DefaultAzureCredential (Azure CLI login, ...) when none is set; `kwargs` go to the SDK's HTTP
    pipeline (e.g. a transport)."""
    if credential is None:
        credential = credential_from_environment()
    return MLClient(credential, outputs.azureSubscriptionId, outputs.resourceGroupName, outputs.workspaceName, **kwargs)
