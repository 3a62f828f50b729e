"""The Azure ML client for the stack's workspace."""

from __future__ import annotations

from typing import Any

from azure.ai.ml import MLClient

from training.stack_outputs import StackOutputs


def ml_client(outputs: StackOutputs, credential: Any = None, **kwargs: Any) -> MLClient:
    """`credential` defaults to DefaultAzureCredential (Azure CLI login, workload identity, ...);
    `kwargs` go to the SDK's HTTP pipeline (e.g. a transport)."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return MLClient(credential, outputs.azureSubscriptionId, outputs.resourceGroupName, outputs.workspaceName, **kwargs)
