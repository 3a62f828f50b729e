"""`submit`: any training code as an Azure ML command job on the edge compute, reading Hub data in place.

One code path for every way a job is described (`--code/--command`, `-f job.yml`, the bundled
example) and for both edge compute modes: the description becomes a job spec in Azure ML's own
command-job YAML schema, `hub://` inputs are resolved, the stack's settings applied, the code
snapshot assembled, and `azure.ai.ml.load_job` turns the spec into the job that is sent.

Egress guard: azure-ai-ml uploads local inputs (and local outputs' contents) to the workspace's
cloud datastore, and uploads the code folder as a snapshot. The guard refuses, before anything
is sent and whatever the job's shape (command, sweep trial, pipeline steps): an input or output
at a local path or `file://`, an output bound to a datastore path, a code snapshot holding data,
and environment variables that look like secrets. Hub data reaches the job only as `hub://`
locations; the storage credential stays on the edge, mounted from the host (VM) or by the
cluster (Kubernetes) at /etc/edge-training.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from training.src.edge_train.location import SCHEME as HUB_SCHEME
from training.src.edge_train.location import HubLocation, LocationError
from training.stack_outputs import StackOutputs

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
EDGE_TRAIN = Path(__file__).resolve().parent / "src" / "edge_train"
EXAMPLES = ROOT / "examples"
CONDA_FILE = Path(__file__).resolve().parent / "environment" / "conda.yaml"
# A pinned Azure ML base image (Ubuntu 22.04); bump deliberately, like any dependency.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20240709.v1"
# Must match training/src/edge_train/credentials.py (not imported here: it imports the blob SDK).
CREDENTIAL_DIRECTORY = "/etc/edge-training"
# Azure Stack Hub storage accepts only the versions of its profile: Microsoft's Hub storage
# developer guide (learn.microsoft.com/azure-stack/user/azure-stack-acs-differences) tells
# clients to pin 2019-07-07. Newer Hub builds may take more: --blob-api-version / hubBlobApiVersion.
DEFAULT_BLOB_API_VERSION = "2019-07-07"
HUB_CA_FILE = f"{CREDENTIAL_DIRECTORY}/hub-ca.pem"
"""Where jobs find the Hub's CA (edge/real_edge.py HUB_CA_ON_VM, mounted like the credential)."""
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_TIMEOUT_SECONDS = 6 * 3600
VIRTUAL_MACHINE, KUBERNETES = "virtual-machine", "kubernetes"

DATA_SUFFIXES = (".csv", ".parquet", ".json", ".jsonl", ".npy", ".npz", ".pkl", ".joblib", ".h5", ".zip", ".tar", ".gz")
MAX_CODE_FILE_BYTES = 10 * 1024 * 1024  # a code snapshot is code: anything bigger is data
SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CONNECTION_STRING|CREDENTIAL|SAS|(^|_)PWD?($|_)", re.IGNORECASE
)
# A SAS may be written from its signature on (`sig=...&se=...`), not only after `?` or `&`.
SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessSignature=|(^|[?&\s'\"])sig=|-----BEGIN", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"(?:^|[\s;&|])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S+)")
"""`NAME=value` in a shell command: a secret set inline travels with the job definition."""
KEY_FILES = re.compile(
    r"(^|/)(id_(rsa|dsa|ecdsa|ed25519)(_sk)?|kubeconfig|\.env(\.[^/]*)?|[^/]*\.(pem|key|pfx|p12|ppk|kubeconfig)"
    r"|\.kube/config|\.ssh/[^/]+|credentials(\.json)?)$",
    re.IGNORECASE,
)
"""Private keys, kubeconfigs and .env files: never part of a code snapshot (ignore them in .amlignore)."""
# Where inputs may point without anything being uploaded: remote stores and registered assets.
REMOTE_SCHEMES = ("azureml", "https", "http", "wasbs", "wasb", "abfss", "abfs", "adl")
INPUT_REFERENCE = r"\$\{\{\s*inputs\.%s\s*\}\}"


class JobSpecError(ValueError):
    """The job description is malformed, or asks for something the edge cannot do."""


class EgressRefused(RuntimeError):
    """The job would send data or secrets to the cloud."""


@dataclass(frozen=True)
class JobSpec:
    """A job in Azure ML's command-job YAML schema, and the folder its relative paths start from."""

    body: Mapping[str, Any]
    base_dir: Path
    source: str
    """What it came from, for messages: a file name, `--code DIR`, or an example."""


@dataclass(frozen=True)
class SubmitSettings:
    """What the stack (and flags) decide about every job."""

    compute: str
    experiment: str
    account_url: str
    stack: str
    compute_mode: str = VIRTUAL_MACHINE
    blob_api_version: str = DEFAULT_BLOB_API_VERSION
    hub_ca: bool = False
    """The Hub has its own CA: jobs trust the copy the VM or the cluster mounts (HUB_CA_FILE)."""
    gpus: int = 0
    """NVIDIA GPUs per edge node; 0: a CPU-only stack."""
    instance_types: tuple[str, ...] = ()
    """The Kubernetes compute's instance types, when the stack says (older stacks do not)."""

    @classmethod
    def from_outputs(cls, outputs: StackOutputs, blob_api_version: str | None = None) -> SubmitSettings:
        version = blob_api_version or outputs.hubBlobApiVersion
        if not API_VERSION.match(version):
            raise JobSpecError(f"blob API version {version!r} is not a date like {DEFAULT_BLOB_API_VERSION}")
        return cls(
            compute=outputs.computeName,
            experiment=outputs.experimentName,
            account_url=outputs.hubBlobEndpoint,
            stack=outputs.stackName,
            compute_mode=outputs.edgeComputeMode,
            blob_api_version=version,
            hub_ca=bool(outputs.hubCaCertificates.strip()),
            gpus=outputs.gpusPerNode,
            instance_types=outputs.instanceTypes,
        )


@dataclass(frozen=True)
class PreparedJob:
    """The final spec (what --dry-run prints), the job built from it, and the snapshot folder."""

    spec: dict[str, Any]
    job: Any
    findings: tuple[str, ...] = field(default=())


# --- describing a job ----------------------------------------------------------------------------


def spec_from_file(path: Path) -> JobSpec:
    try:
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobSpecError(f"job file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise JobSpecError(f"job file {path} cannot be read ({error})") from None
    except yaml.YAMLError as error:
        raise JobSpecError(f"job file {path} is not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(body, dict):
        raise JobSpecError(f"job file {path} does not hold a job (a YAML mapping)")
    return JobSpec(body, path.resolve().parent, str(path))


def spec_from_code(code: Path, command: str, inputs: Mapping[str, str], environment: Mapping[str, Any]) -> JobSpec:
    if not code.is_dir():
        raise JobSpecError(f"--code {code} is not a folder")
    if not command.strip():
        raise JobSpecError("--command is empty")
    body: dict[str, Any] = {"type": "command", "code": str(code.resolve()), "command": command}
    if inputs:
        body["inputs"] = dict(inputs)
    if environment:
        body["environment"] = dict(environment)
    return JobSpec(body, code.resolve(), f"--code {code}")


def example_spec(name: str, data: str | None = None) -> JobSpec:
    """One of examples/<name>/job.yml, optionally reading other Hub data."""
    spec = spec_from_file(EXAMPLES / name / "job.yml")
    if data is not None:
        body = copy.deepcopy(dict(spec.body))
        body.setdefault("inputs", {})["data"] = data
        spec = JobSpec(body, spec.base_dir, spec.source)
    return spec


def environment_option(conda_file: Path | None, image: str | None) -> dict[str, Any]:
    """--environment conda.yaml (on the pinned base image) or --image IMAGE (used as it is)."""
    if conda_file is not None:
        if not conda_file.is_file():
            raise JobSpecError(f"--environment {conda_file} is not a file")
        return {"image": image or BASE_IMAGE, "conda_file": str(conda_file.resolve())}
    if image is not None:
        return {"image": image}
    return {}


# --- resolving it against the stack ---------------------------------------------------------------


def _hub_uri(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(HUB_SCHEME):
        return value
    if isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"].startswith(HUB_SCHEME):
        return value["path"]
    return None


def _variable(name: str) -> str:
    return "EDGE_INPUT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def resolve_hub_inputs(body: dict[str, Any]) -> dict[str, HubLocation]:
    """Take the `hub://` inputs out of the job: each becomes $EDGE_INPUT_<NAME> and, where the
    command says ${{inputs.<name>}}, the location itself, shell-quoted. Azure ML never sees them
    as inputs, so it has nothing to upload or mount."""
    resolved: dict[str, HubLocation] = {}
    inputs = body.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise JobSpecError("inputs must be a mapping of names to values")
    for name, value in list(inputs.items()):
        uri = _hub_uri(value)
        if uri is None:
            continue
        try:
            location = HubLocation.parse(uri)
        except LocationError as error:
            raise JobSpecError(f"input {name!r}: {error}") from None
        resolved[name] = location
        del inputs[name]
        # A reference the author already quoted is unquoted first: the value is quoted once, here.
        reference = re.compile(r"([\"']?)" + INPUT_REFERENCE % re.escape(str(name)) + r"\1")
        body["command"] = reference.sub(lambda _m, loc=location: shlex.quote(loc.uri), str(body.get("command", "")))
        body.setdefault("environment_variables", {})[_variable(str(name))] = location.uri
    if not inputs:
        body.pop("inputs", None)
    return resolved


def _compute_name(value: str) -> str:
    return value.removeprefix("azureml:")


def apply_settings(spec: JobSpec, settings: SubmitSettings) -> tuple[dict[str, Any], dict[str, HubLocation]]:
    """The spec as it will be sent: compute, experiment, locations, credential mount, limits."""
    body = copy.deepcopy(dict(spec.body))
    kind = body.setdefault("type", "command")
    if kind != "command":
        raise JobSpecError(f"{spec.source}: only command jobs run on the edge compute, not type {kind!r}")
    if not str(body.get("command") or "").strip():
        raise JobSpecError(f"{spec.source}: the job has no command")
    if body.get("compute") and _compute_name(str(body["compute"])) != settings.compute:
        raise JobSpecError(
            f"{spec.source}: compute {body['compute']!r} is not the stack's edge compute {settings.compute!r}; "
            "leave compute out (it is filled in) or name that one"
        )
    body["compute"] = f"azureml:{settings.compute}"
    body.setdefault("experiment_name", settings.experiment)
    hub_inputs = resolve_hub_inputs(body)
    variables = body.setdefault("environment_variables", {})
    if not isinstance(variables, dict):
        raise JobSpecError(f"{spec.source}: environment_variables must be a mapping")
    # Locations only: where the data is, not how to read it.
    variables["EDGE_ACCOUNT_URL"] = settings.account_url
    variables["EDGE_BLOB_API_VERSION"] = settings.blob_api_version
    if settings.hub_ca:
        # A path, not certificate material: first boot wrote the CA there (edge/real_edge.py), and
        # edge_train trusts it next to certifi's roots (edge_train/trust.py).
        variables["EDGE_HUB_CA_FILE"] = HUB_CA_FILE
    # edge_train sits at the root of the snapshot; the command runs there (Azure ML runs a job's
    # command in its code folder), so "." finds it whatever script the command starts.
    variables["PYTHONPATH"] = ":".join(p for p in (".", str(variables.get("PYTHONPATH") or "")) if p)
    body.setdefault("environment", {"image": BASE_IMAGE, "conda_file": str(CONDA_FILE)})
    if isinstance(body["environment"], dict) and isinstance(body["environment"].get("conda_file"), str):
        body["environment"]["conda_file"] = str((spec.base_dir / body["environment"]["conda_file"]).resolve())
    resources = body.setdefault("resources", {})
    if not isinstance(resources, dict):
        raise JobSpecError(f"{spec.source}: resources must be a mapping")
    check_instance_type(resources, settings, spec.source)
    if settings.compute_mode == VIRTUAL_MACHINE:
        # The credential file on the VM, into the container, read-only; a path, not a secret.
        mount = f"-v {CREDENTIAL_DIRECTORY}:{CREDENTIAL_DIRECTORY}:ro"
        # On a GPU VM every job gets its GPUs (Docker's --gpus, through the NVIDIA runtime the
        # first boot installs): the VM compute runs one job at a time and has no instance types.
        gpus = "--gpus all" if settings.gpus else ""
        resources["docker_args"] = " ".join(a for a in (str(resources.get("docker_args") or ""), mount, gpus) if a)
    else:
        # Kubernetes: the cluster mounts the credential at the same path into every job, from a
        # volume claim annotated ml.azure.com/mountpath (Azure ML's Arc extension mounts such
        # claims into command and sweep jobs); there are no docker_args on Kubernetes.
        resources.pop("docker_args", None)
    if not resources:
        body.pop("resources", None)
    body.setdefault("limits", {}).setdefault("timeout", DEFAULT_TIMEOUT_SECONDS)
    tags = body.setdefault("tags", {})
    tags.update({"stack": settings.stack, "compute": settings.compute, "compute_mode": settings.compute_mode})
    for name, location in hub_inputs.items():
        tags[f"hub_input.{name}"] = location.uri
    body.setdefault("display_name", "edge-training " + (", ".join(str(v) for v in hub_inputs.values()) or "job"))
    return body, hub_inputs


GPU_WORD = re.compile(r"gpu", re.IGNORECASE)


def check_instance_type(resources: Mapping[str, Any], settings: SubmitSettings, source: str) -> None:
    """`resources.instance_type` against the stack, before anything is sent: a name the compute
    offers, in the mode that has instance types; a GPU type on a CPU-only stack refused."""
    name = resources.get("instance_type")
    if name is None:
        return
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise JobSpecError(f"{source}: instance_type {name!r} is not an instance type name (a DNS label)")
    wants_gpu = bool(GPU_WORD.search(name))
    if wants_gpu and not settings.gpus:
        raise JobSpecError(
            f"{source}: instance_type {name!r} asks for a GPU, and stack {settings.stack!r} has none (its hubVmSize "
            "is a CPU size); deploy on an NCv3 size (docs/deploy/gpus.md) or leave instance_type out"
        )
    if settings.compute_mode == VIRTUAL_MACHINE:
        given = f"its {settings.gpus} GPU(s) with every job" if settings.gpus else "every job the whole VM"
        raise JobSpecError(
            f"{source}: instance_type {name!r}: the virtual-machine compute has no instance types; it gives {given}"
        )
    if settings.instance_types and name not in settings.instance_types:
        raise JobSpecError(
            f"{source}: instance_type {name!r} is not one of the compute's: {', '.join(settings.instance_types)}"
        )


# --- the code snapshot ----------------------------------------------------------------------------


def _code_dir(spec: JobSpec, allow_code_outside: bool = False) -> Path:
    code = spec.body.get("code")
    if code is None:
        raise JobSpecError(f"{spec.source}: the job has no code folder")
    if not isinstance(code, str) or urlsplit(code).scheme not in ("", "file"):
        raise JobSpecError(f"{spec.source}: code must be a local folder, not {code!r}")
    folder = (spec.base_dir / code.removeprefix("file://")).resolve()
    if not folder.is_dir():
        raise JobSpecError(f"{spec.source}: code folder {folder} does not exist")
    # A `code:` that climbs out of the project (`../..`, `/home/me`) would snapshot whatever lives
    # there (keys, other projects' data) into the cloud.
    project = project_root(spec.base_dir)
    if not allow_code_outside and not folder.is_relative_to(project):
        raise EgressRefused(
            f"refusing to submit: {spec.source}: code folder {folder} is outside the project {project} "
            "(the git work tree holding the job file, else its folder); its whole content would be uploaded. "
            "Move the code into the project, or pass --allow-code-outside-project"
        )
    return folder


def project_root(job_dir: Path) -> Path:
    """The project a job file belongs to: the git work tree that holds it (where a data scientist
    keeps `jobs/` beside `src/`), else the job file's own folder."""
    here = job_dir.resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return here


def snapshot_files(code: Path) -> list[tuple[Path, str]]:
    """Exactly the files azure-ai-ml would upload from `code` (its own .amlignore/.gitignore
    logic, symlinks followed), as (file, path in the snapshot)."""
    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    files = get_upload_files_from_folder(code, ignore_file=get_ignore_file(code))
    return [(Path(source), str(relative)) for source, relative in files]


def code_findings(code: Path) -> list[str]:
    findings = []
    for source, relative in snapshot_files(code):
        if KEY_FILES.search(str(relative)):
            findings.append(
                f"the code folder holds {relative}, a key or credential file that would be uploaded with the "
                "code snapshot: move it out, or list it in the folder's .amlignore"
            )
        elif Path(relative).suffix.lower() in DATA_SUFFIXES:
            findings.append(f"the code folder holds {relative}, which would be uploaded with the code snapshot")
        elif source.stat().st_size > MAX_CODE_FILE_BYTES:
            findings.append(f"the code folder holds {relative} ({source.stat().st_size} bytes): too big for code")
    return findings


def assemble_snapshot(code: Path, destination: Path) -> Path:
    """The files that would be uploaded from `code` (ignore files themselves left out, so
    nothing filters the snapshot again), plus the edge_train package at its root."""
    snapshot = destination / "snapshot"
    snapshot.mkdir(parents=True)
    for source, relative in snapshot_files(code):
        if relative in (".amlignore", ".gitignore"):
            continue
        target = snapshot / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    shutil.copytree(EDGE_TRAIN, snapshot / "edge_train", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return snapshot


# --- the guard ------------------------------------------------------------------------------------


def _nodes(job: Any, where: str = "job", base: Path | None = None) -> Iterator[tuple[str, Any, Path]]:
    """The job and every job inside it (a sweep's trial, a pipeline's steps), each with the
    folder its relative paths start from (a trial has none of its own: its sweep's). By type:
    nodes answer any attribute name (azure-ai-ml's AttrDict), so probing with getattr loops."""
    from azure.ai.ml.entities import PipelineJob
    from azure.ai.ml.entities._builders.sweep import Sweep
    from azure.ai.ml.sweep import SweepJob

    own = vars(job).get("_base_path") if hasattr(job, "__dict__") else None
    base = Path(str(own)) if own else (base or Path.cwd())
    yield where, job, base
    if isinstance(job, SweepJob | Sweep) and job.trial is not None:
        yield from _nodes(job.trial, f"{where}.trial", base)
    if isinstance(job, PipelineJob):
        for name, child in (job.jobs or {}).items():
            yield from _nodes(child, f"{where}.jobs.{name}", base)


def _path_of(value: Any) -> str | None:
    value = getattr(value, "_data", value)  # a node's binding wraps the Input
    path = getattr(value, "path", None)
    return str(path) if path is not None else None


def _is_local(path: str) -> bool:
    return urlsplit(path).scheme.lower() not in REMOTE_SCHEMES


def egress_findings(job: Any) -> list[str]:
    """Everything in `job` that would send data or secrets to the cloud."""
    problems = []
    for where, node, base in _nodes(job):
        for name, value in (getattr(node, "inputs", None) or {}).items():
            path = _path_of(value)
            if path is not None and _is_local(path):
                problems.append(
                    f"{where} input {name!r} is the local path {path!r}: azure-ai-ml would upload it to the cloud"
                )
        for name, value in (getattr(node, "outputs", None) or {}).items():
            path = _path_of(value)
            if path is not None:
                problems.append(
                    f"{where} output {name!r} is bound to {path!r}: the job would upload what it writes there; "
                    "log models and metrics with MLflow instead"
                )
        code = getattr(node, "code", None)
        if isinstance(code, str | Path) and _is_local(str(code)):
            folder = base / str(code).removeprefix("file://")
            if folder.is_dir():
                problems += code_findings(folder)
        for name, value in (getattr(node, "environment_variables", None) or {}).items():
            if _secret(str(name), str(value)):
                problems.append(f"environment variable {name} looks like a secret: job definitions live in the cloud")
        command = getattr(node, "command", None)
        if isinstance(command, str) and command_secrets(command):
            problems.append(
                f"{where} command sets {', '.join(command_secrets(command))}, which looks like a secret: "
                "job definitions live in the cloud"
            )
    return problems


def _secret(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name) or SECRET_VALUE.search(value))


def command_secrets(command: str) -> list[str]:
    """What in a job's command looks like a secret: `NAME=value` with a secret's name or value, or
    a secret-shaped value anywhere (named by its shape, never quoted)."""
    found = [name for name, value in _ASSIGNMENT.findall(command) if _secret(name, value)]
    if not found and SECRET_VALUE.search(command):
        found.append("a key, SAS signature or private key")
    return found


def redact_spec(value: Any, name: str = "") -> Any:
    """`value` for printing: environment values that look like secrets, and secret-shaped parts of
    commands, replaced (what --dry-run shows is what a terminal log keeps)."""
    if isinstance(value, dict):
        return {k: redact_spec(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_spec(v, name) for v in value]
    if isinstance(value, str) and (_secret(name, value) if name not in ("command", "code") else False):
        return "***redacted***"
    if isinstance(value, str) and name == "command":
        for variable, secret in _ASSIGNMENT.findall(value):
            if _secret(variable, secret):
                value = value.replace(f"{variable}={secret}", f"{variable}=***redacted***")
        return _SECRET_TAIL.sub(r"\1***redacted***", value)
    return value


_SECRET_TAIL = re.compile(r"((?:AccountKey|SharedAccessSignature|sig)=)[^;&'\"\s]+", re.IGNORECASE)


def egress_guard(job: Any) -> None:
    problems = egress_findings(job)
    if problems:
        raise EgressRefused("refusing to submit: " + "; ".join(problems))


# --- from spec to job -----------------------------------------------------------------------------


def load(body: Mapping[str, Any], base_dir: Path) -> Any:
    """The azure-ai-ml job for a spec: load_job, exactly as `az ml job create -f` reads a file."""
    from azure.ai.ml import load_job
    from azure.ai.ml.exceptions import ValidationException
    from marshmallow import ValidationError

    # relative_origin is taken as a file whose folder relative paths start from.
    origin = str(base_dir / "job.yml")
    try:
        return load_job(io.StringIO(yaml.safe_dump(dict(body), sort_keys=False)), relative_origin=origin)
    except (ValidationException, ValidationError, ValueError, TypeError) as error:
        text = " ".join(str(error).split())
        raise JobSpecError(f"azure-ai-ml does not accept the job: {text[:400] or type(error).__name__}") from None


@contextmanager
def prepare(spec: JobSpec, settings: SubmitSettings, allow_code_outside: bool = False) -> Iterator[PreparedJob]:
    """The job ready to send, with the guard's findings; its snapshot lives until the block ends.

    The guard sees the user's code folder first, so a refused job copies nothing; the assembled
    snapshot is checked again, since that is what is uploaded."""
    kind = spec.body.get("type", "command")
    if kind != "command":
        # Refused either way; the guard first, since what a job would upload matters most.
        findings = egress_findings(load(spec.body, spec.base_dir))
        if findings:
            raise EgressRefused("refusing to submit: " + "; ".join(findings))
        raise JobSpecError(f"{spec.source}: only command jobs run on the edge compute, not type {kind!r}")
    body, _ = apply_settings(spec, settings)
    code = _code_dir(spec, allow_code_outside)
    if (code / "edge_train").exists():
        raise JobSpecError(f"{spec.source}: the code folder has its own edge_train; the snapshot gets the project's")
    body["code"] = str(code)
    shown = load(body, spec.base_dir)
    findings = egress_findings(shown)
    if findings:
        yield PreparedJob(body, shown, tuple(findings))
        return
    with tempfile.TemporaryDirectory(prefix="edge-training-job-") as scratch:
        sent = dict(body, code=str(assemble_snapshot(code, Path(scratch))))
        job = load(sent, spec.base_dir)
        yield PreparedJob(body, job, tuple(egress_findings(job)))


def render(prepared: PreparedJob) -> str:
    """What --dry-run prints: the job spec as YAML and what the guard found."""
    lines = [
        "# The job as azure.ai.ml.load_job reads it; the code snapshot is the folder below (as its",
        "# .amlignore leaves it) plus the edge_train package at its root.",
        yaml.safe_dump(redact_spec(prepared.spec), sort_keys=False).rstrip(),
        "# egress guard: "
        + ("; ".join(prepared.findings) if prepared.findings else "nothing leaves the edge but code"),
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: str
    error: str | None = None
    """For a job that did not complete: the service's error (with the log lines it returns), as
    one paragraph."""


def _paragraph(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def submit(ml_client: Any, job: Any, stream: bool = True) -> JobOutcome:
    """Create the job (after the guard), stream its logs, return its name and final status."""
    from azure.ai.ml.exceptions import JobException

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
    # JobStatus is a str enum: str() of it is "JobStatus.COMPLETED", its value "Completed".
    status = str(getattr(final.status, "value", final.status))
    if status != "Completed" and error is None:
        # Job entities answer any attribute (AttrDict); only a real error, never a stand-in object.
        reported = vars(final).get("error") if hasattr(final, "__dict__") else None
        error = str(reported or f"job ended {status}; see {getattr(final, 'studio_url', '')}")
    return JobOutcome(created.name, status, _paragraph(error) if error is not None else None)
