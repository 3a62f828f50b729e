"""`package`: a container image of a registered model, built into the workspace's registry.

Uses Azure ML model packaging (preview in azure-ai-ml 1.35): the service builds an image with the
model, the scoring script and the inference server, and pushes it to the workspace's registry,
which is the project's own registry (admin user off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.ai.ml.entities import (
    AzureMLOnlineInferencingServer,
    BaseEnvironment,
    CodeConfiguration,
    Environment,
    ModelPackage,
)

from training.jobs import BASE_IMAGE, CONDA_FILE

SERVING = Path(__file__).resolve().parent / "serving"


def package_request(model_name: str, model_version: str, base_environment_id: str) -> ModelPackage:
    return ModelPackage(
        target_environment=f"{model_name}-image",
        inferencing_server=AzureMLOnlineInferencingServer(
            code_configuration=CodeConfiguration(code=str(SERVING), scoring_script="score.py")
        ),
        base_environment_source=BaseEnvironment(type="EnvironmentAsset", resource_id=base_environment_id),
        tags={"model": f"{model_name}:{model_version}"},
    )


def package(ml_client: Any, model_name: str, model_version: str, image: str = BASE_IMAGE) -> str:
    """Build the image and return its reference in the registry."""
    base = ml_client.environments.create_or_update(
        Environment(name="edge-training-serving", image=image, conda_file=str(CONDA_FILE))
    )
    built = ml_client.models.package(model_name, model_version, package_request(model_name, model_version, base.id))
    return str(built.image)
