"""`package`: the registered model, fetched with its lineage, for the image build; and, as an
option, Azure ML model packaging.

The default path builds our own image (training/serving/Dockerfile) with ACR Tasks
(training/image_build.py). Azure ML model packaging (preview in azure-ai-ml 1.35) stays available
with `package --azureml-packaging`, with the model copied into the image (ModelConfiguration
mode="Copy"; the azure-ai-ml reference lists "Copy" and "Download"). In download mode the image
fetches the model from the workspace when it starts, which an image on the Hub cannot rely on;
Microsoft Learn's "Package and deploy models outside Azure Machine Learning (preview)" is the
guide for packages that leave Azure ML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azure.ai.ml.entities import (
    AzureMLOnlineInferencingServer,
    BaseEnvironment,
    CodeConfiguration,
    Environment,
    ModelConfiguration,
    ModelPackage,
)

from training import mlflow_model
from training.image_build import ImageBuildError, ImageSpec
from training.jobs import BASE_IMAGE, CONDA_FILE

SERVING = Path(__file__).resolve().parent / "serving"


def package_request(model_name: str, model_version: str, base_environment_id: str) -> ModelPackage:
    return ModelPackage(
        target_environment=f"{model_name}-image",
        inferencing_server=AzureMLOnlineInferencingServer(
            code_configuration=CodeConfiguration(code=str(SERVING), scoring_script="score.py")
        ),
        base_environment_source=BaseEnvironment(type="EnvironmentAsset", resource_id=base_environment_id),
        model_configuration=ModelConfiguration(mode="Copy"),  # the REST enum: "Copy" | "Download"
        tags={"model": f"{model_name}:{model_version}"},
    )


def package(ml_client: Any, model_name: str, model_version: str, image: str = BASE_IMAGE) -> str:
    """Azure ML model packaging: build the image and return its reference in the registry."""
    base = ml_client.environments.create_or_update(
        Environment(name="edge-training-serving", image=image, conda_file=str(CONDA_FILE))
    )
    built = ml_client.models.package(model_name, model_version, package_request(model_name, model_version, base.id))
    return str(built.image)


def registered_model(ml_client: Any, name: str, version: str, destination: Path) -> tuple[Path, ImageSpec]:
    """Download a registered model version; its folder and its lineage (the tags `register` set)."""
    model = ml_client.models.get(name, version)
    tags = dict(model.tags or {})
    missing = [t for t in ("data_fingerprint", "git_commit") if not tags.get(t)]
    if missing:
        raise ImageBuildError(f"model {name}:{version} lacks the tags {', '.join(missing)} that `register` sets")
    ml_client.models.download(name, version, download_path=str(destination))
    try:
        folder = mlflow_model.find(destination)
    except mlflow_model.ModelFolderError as error:
        raise ImageBuildError(f"model {name}:{version}: {error}") from None
    return folder, ImageSpec(name, str(version), tags["data_fingerprint"], tags["git_commit"])


def local_model(name: str, version: str, model_dir: Path, data_fingerprint: str | None, git_commit: str) -> ImageSpec:
    """A model folder from `run --local` (outputs/<example>/model): its lineage is beside it."""
    if data_fingerprint is None:
        lineage = model_dir.parent / "lineage.json"
        try:
            data_fingerprint = str(json.loads(lineage.read_text())["data_fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ImageBuildError(
                f"--model-dir {model_dir}: no readable {lineage} with data_fingerprint; pass --data-fingerprint"
            ) from None
    return ImageSpec(name, version, data_fingerprint, git_commit)
