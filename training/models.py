"""`register`: the job's model output as a new, numbered, tagged model version."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.ai.ml.constants import AssetTypes, ListViewType
from azure.ai.ml.entities import Model

from training.stack_outputs import StackOutputs

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Lineage:
    job_name: str
    data_fingerprint: str
    hyperparameters: Mapping[str, Any]
    git_commit: str


def git_commit(repository: Path = REPOSITORY) -> str:
    """HEAD, with "-dirty" when the work tree has uncommitted changes; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repository, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def next_version(ml_client: Any, name: str) -> str:
    """One more than the highest numeric version of `name` (1 for a new model), archived versions
    included: the service keeps their numbers taken."""
    listed = ml_client.models.list(name=name, list_view_type=ListViewType.ALL)
    versions = [int(m.version) for m in listed if str(m.version).isdigit()]
    return str(max(versions, default=0) + 1)


def register(ml_client: Any, outputs: StackOutputs, name: str, lineage: Lineage, output_name: str = "model") -> Model:
    model = Model(
        name=name,
        version=next_version(ml_client, name),
        type=AssetTypes.CUSTOM_MODEL,
        path=f"azureml://jobs/{lineage.job_name}/outputs/artifacts/paths/outputs/{output_name}/",
        description=(
            f"Trained at the edge on {outputs.computeName} ({outputs.stackName}) by job {lineage.job_name}; "
            f"the data never left Azure Stack Hub storage {outputs.hubDataContainer}."
        ),
        tags={
            "data_fingerprint": lineage.data_fingerprint,
            "git_commit": lineage.git_commit,
            "job": lineage.job_name,
            "compute": outputs.computeName,
            "stack": outputs.stackName,
            "hyperparameters": json.dumps(dict(lineage.hyperparameters), sort_keys=True),
        },
    )
    return ml_client.models.create_or_update(model)
