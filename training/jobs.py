"""`submit`: an Azure ML command job on the attached edge compute, reading data in place.

Egress guard: azure-ai-ml uploads local inputs to the workspace's cloud datastore, so a job
with a local-path input, or a code folder holding data, would move data to the cloud. The guard
refuses such a job before anything is sent. Data reaches the job only as Hub storage locations
on its command line; the credential stays on the VM, mounted read-only from the host.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.ai.ml import command
from azure.ai.ml.entities import Command, Environment
from azure.ai.ml.exceptions import JobException

from training.src.edge_train.credentials import CREDENTIAL_DIRECTORY, DEFAULT_CREDENTIAL_FILE
from training.stack_outputs import StackOutputs

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "src"
CONDA_FILE = Path(__file__).resolve().parent / "environment" / "conda.yaml"
# A pinned Azure ML base image (Ubuntu 22.04); bump deliberately, like any dependency.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20240709.v1"
DATA_SUFFIXES = (".csv", ".parquet", ".json", ".jsonl", ".npy", ".npz", ".pkl", ".joblib", ".h5", ".zip", ".tar", ".gz")
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CONNECTION_STRING|CREDENTIAL|SAS", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig=|-----BEGIN", re.IGNORECASE)
URL_SCHEMES = ("azureml", "https", "http", "wasbs", "abfss", "adl")


class EgressRefused(RuntimeError):
    """The job would send data or secrets to the cloud."""


@dataclass(frozen=True)
class JobRequest:
    prefix: str
    hyperparameters: Mapping[str, float | int] = field(default_factory=dict)
    image: str = BASE_IMAGE
    timeout_seconds: int = 6 * 3600


def _code_files_that_look_like_data(code: Path) -> list[str]:
    ignored = (code / ".amlignore").read_text().split() if (code / ".amlignore").exists() else []
    found = []
    for path in code.rglob("*"):
        if path.is_file() and path.suffix.lower() in DATA_SUFFIXES and not any(path.match(p) for p in ignored):
            found.append(str(path.relative_to(code)))
    return found


def egress_guard(job: Command) -> None:
    """Refuse local inputs, data in the code snapshot, and secrets in environment variables."""
    problems = []
    for name, value in (job.inputs or {}).items():
        path = getattr(value, "path", value if isinstance(value, str) else None)
        if path is not None and isinstance(path, str) and urlsplit(path).scheme not in URL_SCHEMES:
            problems.append(f"input {name!r} is the local path {path!r}: azure-ai-ml would upload it to the cloud")
    if job.code is not None and Path(str(job.code)).is_dir():
        for data in _code_files_that_look_like_data(Path(str(job.code))):
            problems.append(f"the code folder holds {data}, which would be uploaded with the code snapshot")
    for name, value in (job.environment_variables or {}).items():
        if SECRET_NAME.search(name) or SECRET_VALUE.search(str(value)):
            problems.append(f"environment variable {name} looks like a secret: job definitions live in the cloud")
    if problems:
        raise EgressRefused("refusing to submit: " + "; ".join(problems))


def build_job(outputs: StackOutputs, request: JobRequest) -> Command:
    arguments = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(request.hyperparameters.items()))
    job = command(
        code=str(SOURCE),
        command=(
            "python train.py --account-url $EDGE_ACCOUNT_URL --container $EDGE_CONTAINER --prefix $EDGE_PREFIX "
            f"--credential-file {DEFAULT_CREDENTIAL_FILE} --output-dir ./outputs {arguments}"
        ).strip(),
        environment=Environment(image=request.image, conda_file=str(CONDA_FILE)),
        compute=outputs.computeName,
        experiment_name=outputs.experimentName,
        # Locations only: where the data is, not how to read it.
        environment_variables={
            "EDGE_ACCOUNT_URL": outputs.hubBlobEndpoint,
            "EDGE_CONTAINER": outputs.hubDataContainer,
            "EDGE_PREFIX": request.prefix,
        },
        # The credential file on the VM, into the container, read-only; a path, not a secret.
        docker_args=f"-v {CREDENTIAL_DIRECTORY}:{CREDENTIAL_DIRECTORY}:ro",
        timeout=request.timeout_seconds,
        tags={"stack": outputs.stackName, "compute": outputs.computeName, "prefix": request.prefix},
        display_name=f"edge-training {request.prefix or '(all)'}",
    )
    egress_guard(job)
    return job


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: str
    error: str | None = None
    """For a job that did not complete: the service's error, with the log lines it returns."""


def submit(ml_client: Any, job: Command, stream: bool = True) -> JobOutcome:
    """Create the job (after the guard), stream its logs, return its name and final status."""
    egress_guard(job)
    created = ml_client.jobs.create_or_update(job)
    log.info("submitted %s: %s", created.name, getattr(created, "studio_url", ""))
    error = None
    if stream:
        try:
            ml_client.jobs.stream(created.name)
        except JobException as failed:  # raised by stream when the job fails
            error = str(failed)
    final = ml_client.jobs.get(created.name)
    status = str(final.status)
    if status != "Completed" and error is None:
        error = str(getattr(final, "error", None) or f"job ended {status}; see {getattr(final, 'studio_url', '')}")
    return JobOutcome(created.name, status, error)
