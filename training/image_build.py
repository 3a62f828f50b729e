"""`package`: build the model image inside our registry with ACR Tasks; no Docker engine here.

The steps are the ones `az acr build` takes (Azure/azure-cli, acr/_archive_utils.py and build.py):
ask the registry for a one-time upload URL (registries.get_build_source_upload_url), upload the
build context there as a gzipped tarball, schedule a DockerBuildRequest that points at it
(registries.schedule_run), then follow the run (runs.get) and its log (runs.get_log_sas_url,
a blob that grows while the build runs) until it ends.

Client: azure-mgmt-containerregistry 14.0.0, API version 2025-03-01-preview (the newest in that
wheel with the Tasks operations; its default profile's 2025-04-01 has none). The build context
is exactly the Dockerfile, requirements.txt, score.py, server_worker.py and the MLflow model folder:
never training data. A model without a signature or without pinned requirements is refused here,
before anything is uploaded.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.deadline import Deadline, retry_until
from training import mlflow_model
from training.local_server import DOCKERFILE, REQUIREMENTS, SCORE, WORKER

log = logging.getLogger(__name__)

TASKS_API_VERSION = "2025-03-01-preview"
TERMINAL = {"Succeeded", "Failed", "Canceled", "Error", "Timeout"}
# What a model folder may hold: the model and its small metadata, never a data file.
DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".npy", ".npz", ".h5", ".zip", ".tar", ".gz")
MAX_MODEL_BYTES = 2 * 1024**3


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageSpec:
    """What the image is of: the registered model and its lineage, which become its OCI labels."""

    model_name: str
    model_version: str
    data_fingerprint: str
    git_commit: str

    @property
    def repository(self) -> str:
        # Registry repositories are lower case: [a-z0-9] separated by . _ - or /.
        name = re.sub(r"[^a-z0-9._-]+", "-", self.model_name.lower()).strip("._-")
        if not name:
            raise ImageBuildError(f"model name {self.model_name!r} gives no valid repository name")
        return name

    @property
    def tag(self) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", self.model_version):
            raise ImageBuildError(f"model version {self.model_version!r} is not a valid image tag")
        return f"{self.repository}:{self.model_version}"

    def build_arguments(self) -> dict[str, str]:
        """The Dockerfile's ARGs, which its LABELs carry into the image."""
        return {
            "MODEL_NAME": self.model_name,
            "MODEL_VERSION": self.model_version,
            "DATA_FINGERPRINT": self.data_fingerprint,
            "GIT_COMMIT": self.git_commit,
        }


@dataclass(frozen=True)
class BuiltImage:
    run_id: str
    image: str
    """registry/repository@sha256:..., the reference deploys use: it cannot move."""
    tag: str
    digest: str


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0].split("[")[0]).lower()


def servable(model_dir: Path) -> mlflow_model.MlflowModel:
    """The MLflow model in `model_dir`, if the image can serve it: a python_function flavor, a
    signature, requirements pinned NAME==VERSION that agree with the server's own pins."""
    if not model_dir.is_dir():
        raise ImageBuildError(f"model folder {model_dir} does not exist")
    if not (model_dir / "MLmodel").is_file():
        raise ImageBuildError(f"model folder {model_dir} is not an MLflow model (no MLmodel file in it)")
    try:
        model = mlflow_model.read(model_dir)
    except mlflow_model.ModelFolderError as error:
        raise ImageBuildError(f"model folder {error}") from None
    problems = model.serving_problems()
    if not problems:
        server = {_name(r): r for r in REQUIREMENTS.read_text().splitlines() if "==" in r and not r.startswith("#")}
        clashes = [f"{r} (the server pins {server[_name(r)]})" for r in model.requirements or ()
                   if _name(r) in server and server[_name(r)].split("==")[1] != r.split("==")[1]]  # fmt: skip
        if clashes:
            problems.append(f"requirements.txt disagrees with the server's pins: {', '.join(clashes)}")
    if problems:
        raise ImageBuildError(f"model folder {model_dir} cannot be served: {'; '.join(problems)}")
    return model


def _model_files(model_dir: Path) -> list[Path]:
    servable(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    data = [p.relative_to(model_dir).as_posix() for p in files if p.name.lower().endswith(DATA_SUFFIXES)]
    if data:
        raise ImageBuildError(f"model folder {model_dir} holds data files, which never go into an image: {data}")
    if sum(p.stat().st_size for p in files) > MAX_MODEL_BYTES:
        raise ImageBuildError(f"model folder {model_dir} is larger than {MAX_MODEL_BYTES} bytes")
    return files


def build_context(model_dir: Path) -> bytes:
    """The gzipped tarball ACR Tasks builds from: Dockerfile, requirements.txt, score.py,
    server_worker.py, model/.

    Entries carry fixed owners and times, so the same model gives the same bytes."""

    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        archive.addfile(info, io.BytesIO(data))

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for source in (DOCKERFILE, REQUIREMENTS, SCORE, WORKER):
            add(archive, source.name, source.read_bytes())
        for path in _model_files(model_dir):
            add(archive, f"model/{path.relative_to(model_dir).as_posix()}", path.read_bytes())
    return buffer.getvalue()


def context_names(context: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as archive:
        return archive.getnames()


def registry_client(subscription_id: str, credential: Any = None, **kwargs: Any) -> Any:
    """ContainerRegistryManagementClient at the Tasks API version; `kwargs` go to the pipeline
    (base_url, transport). `credential` defaults to DefaultAzureCredential."""
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerRegistryManagementClient(credential, subscription_id, api_version=TASKS_API_VERSION, **kwargs)


def docker_build_request(source_location: str, spec: ImageSpec, timeout_seconds: int) -> Any:
    from azure.mgmt.containerregistry.v2025_03_01_preview import models

    return models.DockerBuildRequest(
        source_location=source_location,
        docker_file_path="Dockerfile",
        image_names=[spec.tag],
        is_push_enabled=True,
        no_cache=False,
        arguments=[models.Argument(name=k, value=v, is_secret=False) for k, v in spec.build_arguments().items()],
        platform=models.PlatformProperties(os="Linux", architecture="amd64"),
        timeout=timeout_seconds,
    )


class _LogFollower:
    """Reads the run's log blob from where it left off; the blob grows while the build runs."""

    def __init__(self, log_link: str, emit: Callable[[str], None]) -> None:
        from azure.storage.blob import BlobClient

        self.blob = BlobClient.from_blob_url(log_link)
        self.emit = emit
        self.offset = 0
        self.partial = ""
        self.lines: list[str] = []

    def poll(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            size = self.blob.get_blob_properties().size
        except ResourceNotFoundError:
            return  # not written yet
        if size <= self.offset:
            return
        chunk = self.blob.download_blob(offset=self.offset, length=size - self.offset).readall()
        self.offset = size
        *complete, self.partial = (self.partial + chunk.decode("utf-8", errors="replace")).split("\n")
        for line in complete:
            self.lines.append(line.rstrip("\r"))
            self.emit(line.rstrip("\r"))

    def tail(self, count: int = 25) -> str:
        return "\n".join([*self.lines, self.partial][-count:]).strip()


def build_image(
    client: Any,
    resource_group: str,
    registry: str,
    login_server: str,
    spec: ImageSpec,
    context: bytes,
    *,
    timeout_seconds: int = 3600,
    emit: Callable[[str], None] = log.info,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> BuiltImage:
    """Upload `context`, build and push `spec.tag`, follow the log; the pushed image's digest."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobClient

    clock, sleep = clock or time.monotonic, sleep or time.sleep
    source = client.registries.get_build_source_upload_url(resource_group, registry)
    # The upload URL is a write SAS: never logged, never in an error. The relative path is what
    # the build reads.
    try:
        BlobClient.from_blob_url(source.upload_url).upload_blob(context, overwrite=True)
    except AzureError as error:
        code = getattr(error, "error_code", None) or type(error).__name__
        code = getattr(code, "value", code)  # StorageErrorCode is a str enum
        raise ImageBuildError(f"uploading the build context to {registry} failed ({code})") from None
    run = client.registries.schedule_run(
        resource_group, registry, docker_build_request(source.relative_path, spec, timeout_seconds)
    )
    run_id = str(run.run_id)
    emit(f"ACR Tasks run {run_id}: building {login_server}/{spec.tag}")
    follower = _LogFollower(client.runs.get_log_sas_url(resource_group, registry, run_id).log_link, emit)
    # The service stops the build at `timeout`; this client waits a little longer for it to say so.
    latest = [run]

    def ended() -> bool:
        latest[0] = client.runs.get(resource_group, registry, run_id)
        follower.poll()
        return str(latest[0].status) in TERMINAL

    if not retry_until(ended, Deadline(timeout_seconds + 120, clock), sleep, first_delay=2.0, max_delay=10.0):
        raise ImageBuildError(
            f"run {run_id} still {latest[0].status} after {timeout_seconds}s; last log lines:\n{follower.tail()}"
        )
    run = latest[0]
    status = str(run.status)
    if status != "Succeeded":
        reason = f" ({run.run_error_message})" if run.run_error_message else ""
        raise ImageBuildError(f"run {run_id} ended {status}{reason}; last log lines:\n{follower.tail()}")
    return _built(run_id, login_server, spec, run.output_images or [])


def _built(run_id: str, login_server: str, spec: ImageSpec, images: Iterable[Any]) -> BuiltImage:
    for image in images:
        if image.repository == spec.repository and image.tag == spec.model_version and image.digest:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", image.digest):
                raise ImageBuildError(f"run {run_id} reported digest {image.digest!r}, not a sha256 digest")
            return BuiltImage(
                run_id=run_id,
                image=f"{login_server}/{spec.repository}@{image.digest}",
                tag=f"{login_server}/{spec.tag}",
                digest=image.digest,
            )
    raise ImageBuildError(f"run {run_id} succeeded but reported no image {spec.tag}")
