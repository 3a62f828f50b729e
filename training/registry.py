"""`register`: the job's model as a new, numbered, tagged MLflow model version.

The examples save their model in MLflow format to ./outputs/model/ (Azure ML uploads a job's
./outputs to its artifacts), so the version is registered as `mlflow_model`: the studio shows
its signature, and online endpoints deploy it without a scoring script.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.stack_outputs import StackOutputs

FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class LineageError(ValueError):
    """A lineage file or fingerprint that cannot be what a job wrote."""


@dataclass(frozen=True)
class Lineage:
    job_name: str
    data_fingerprint: str
    hyperparameters: Mapping[str, Any]
    git_commit: str

    def __post_init__(self) -> None:
        if not FINGERPRINT.match(self.data_fingerprint):
            raise LineageError(f"data fingerprint {self.data_fingerprint!r} is not a SHA-256 (64 hex digits)")


def read_lineage(path: Path) -> tuple[str, dict[str, Any]]:
    """(data fingerprint, hyperparameters) from a job's outputs/lineage.json."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LineageError(f"--lineage {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LineageError(f"--lineage {path} cannot be read as UTF-8 text ({error})") from None
    except json.JSONDecodeError as error:
        raise LineageError(f"--lineage {path} is not JSON ({error})") from None
    if not isinstance(values, dict) or not isinstance(values.get("data_fingerprint"), str):
        raise LineageError(f"--lineage {path} is not a job's lineage.json (no data_fingerprint string)")
    params = values.get("hyperparameters", {})
    if not isinstance(params, dict):
        raise LineageError(f"--lineage {path}: hyperparameters is not an object")
    return values["data_fingerprint"], params


def git_commit(repository: Path | None = None) -> str:
    """HEAD, with "-dirty" when the work tree has uncommitted changes; "unknown" outside git.
    By default the repository of the folder the command runs in: the data scientist's own code,
    wherever this package is installed."""
    repository = Path.cwd() if repository is None else repository
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
    from azure.ai.ml.constants import ListViewType

    listed = ml_client.models.list(name=name, list_view_type=ListViewType.ALL)
    versions = [int(m.version) for m in listed if str(m.version).isdigit()]
    return str(max(versions, default=0) + 1)


def job_model(ml_client: Any, job_name: str, destination: Path, output_name: str = "model") -> Path:
    """The job's MLflow model, downloaded from its artifacts (outputs/<output_name>/) for the audit.

    azure-ai-ml's jobs.download writes a job's default artifacts under <destination>/artifacts/."""
    from training import mlflow_model

    ml_client.jobs.download(job_name, download_path=str(destination))
    folder = destination / "artifacts" / "outputs" / output_name
    if not folder.is_dir():
        raise LineageError(f"job {job_name} has no outputs/{output_name}/ among its artifacts to register")
    try:
        return mlflow_model.find(folder)
    except mlflow_model.ModelFolderError as error:
        raise LineageError(f"job {job_name}: {error}") from None


def register(
    ml_client: Any,
    outputs: StackOutputs,
    name: str,
    lineage: Lineage,
    output_name: str = "model",
    tags: Mapping[str, str] | None = None,
) -> Any:
    """The next version of `name`; `tags` (the egress audit's) go beside the lineage tags."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    model = Model(
        name=name,
        version=next_version(ml_client, name),
        type=AssetTypes.MLFLOW_MODEL,
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
            **dict(tags or {}),
        },
    )
    return ml_client.models.create_or_update(model)
