"""submit and register through the real azure-ai-ml MLClient, sending real HTTPS to the local
Resource Manager stand-in: the job bodies built from --code, from -f job.yml and from each
example, field by field and against Microsoft's generated models; the egress guard, whatever the
job's shape, before any request; --dry-run sending nothing; the MLflow model registration."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.arm_models import rest_field_problems
from tests.harness.arm_server import ArmEndpoint, Reply, StaticCredential, serve_arm
from tests.test_training_cli import RedirectingTransport, models_path
from training import cli, jobs, registry, stack_outputs
from training.workspace import ml_client

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
OUTPUTS = {
    "stackName": "dev",
    "experimentName": "edge-training",
    "azureSubscriptionId": SUBSCRIPTION,
    "resourceGroupName": "rg-edge",
    "workspaceName": "mlw-edge",
    "registryLoginServer": "credge.azurecr.io",
    "registryName": "credge",
    "computeName": "edge-vm",
    "hubBlobEndpoint": "https://hubdata.blob.local.azurestack.external/",
    "hubDataContainer": "training-data",
    "hubVmPublicIp": "192.0.2.10",
    "hubVmAdminUsername": "azureuser",
    "sshHostKeyFingerprint": "SHA256:" + "A" * 43,
}
BASE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-edge/providers/"
    "Microsoft.MachineLearningServices/workspaces/mlw-edge"
)
CODE_ID = f"{BASE}/codes/snapshot/versions/1"
ENVIRONMENT_ID = f"{BASE}/environments/CliV2AnonymousEnvironment/versions/1"
MOUNT = "-v /etc/edge-training:/etc/edge-training:ro"


def outputs_file(tmp_path: Path, **overrides: str) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({**OUTPUTS, **overrides}))
    return path


# --- the stand-in, scripted as the service answers --------------------------------------------------


def _code_version() -> dict[str, Any]:
    return {
        "id": CODE_ID,
        "name": "1",
        "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
        "properties": {
            "codeUri": "https://stedge.blob.core.windows.net/code/snapshot",
            "isAnonymous": True,
            "isArchived": False,
            "properties": {},
            "tags": {},
        },
    }


def job_json(name: str, status: str, **properties: Any) -> dict[str, Any]:
    return {
        "id": f"{BASE}/jobs/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": {
            "jobType": "Command",
            "command": "python train.py",
            "codeId": CODE_ID,
            "environmentId": ENVIRONMENT_ID,
            "computeId": f"{BASE}/computes/edge-vm",
            "experimentName": "edge-training",
            "status": status,
            "properties": {},
            "tags": {},
            "inputs": {},
            "outputs": {},
            **properties,
        },
    }


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[ArmEndpoint]:
    with serve_arm(tmp_path) as endpoint:
        # The snapshot's content hash is known to the workspace already, so nothing is uploaded
        # to blob storage (which the stand-in does not have); the listing's `hash` shows what
        # the SDK would have uploaded.
        endpoint.fake.script_matching(
            "GET", rf"{re.escape(BASE)}/codes/[^/]+/versions", Reply(200, {"value": [_code_version()]})
        )
        endpoint.fake.script("GET", CODE_ID, Reply(200, _code_version()))
        endpoint.fake.script_matching(
            "PUT",
            rf"{re.escape(BASE)}/environments/CliV2AnonymousEnvironment/versions/[0-9a-f]+",
            Reply(
                201,
                {
                    "id": ENVIRONMENT_ID,
                    "name": "1",
                    "properties": {
                        "image": jobs.BASE_IMAGE,
                        "isAnonymous": True,
                        "isArchived": False,
                        "osType": "Linux",
                    },
                },
            ),
        )
        endpoint.fake.script_matching(
            "PUT", rf"{re.escape(BASE)}/jobs/[^/]+", Reply(201, job_json("job-1", "Starting"))
        )
        endpoint.fake.script("GET", f"{BASE}/jobs/job-1", Reply(200, job_json("job-1", "Completed")))
        yield endpoint


@pytest.fixture
def workspace(arm: ArmEndpoint, monkeypatch: pytest.MonkeyPatch) -> ArmEndpoint:
    """The CLI's MLClient is the real one, its transport pointed at the stand-in."""

    def client(outputs: stack_outputs.StackOutputs) -> Any:
        return ml_client(outputs, credential=StaticCredential(), transport=RedirectingTransport(arm))

    monkeypatch.setattr("training.workspace.ml_client", client)
    return arm


def job_put(arm: ArmEndpoint) -> Any:
    (put,) = [r for r in arm.fake.requests if r.method == "PUT" and "/jobs/" in r.path]
    return put


def snapshot_hash_asked(arm: ArmEndpoint) -> str:
    (listing,) = [r for r in arm.fake.requests if r.method == "GET" and "hash" in r.query]
    return listing.query["hash"][0]


def expected_snapshot_hash(code: Path, tmp_path: Path) -> str:
    """The content hash azure-ai-ml computes for a folder holding the user's files (as their
    .amlignore leaves them) and edge_train: built here independently, with plain copies."""
    from azure.ai.ml._utils._asset_utils import IgnoreFile, get_content_hash

    reference = tmp_path / "reference"
    shutil.copytree(
        code, reference, ignore=shutil.ignore_patterns("__pycache__", "*.csv", "outputs", ".amlignore", ".gitignore")
    )
    shutil.copytree(jobs.EDGE_TRAIN, reference / "edge_train", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(get_content_hash(reference, IgnoreFile()))


def assert_valid_job_body(body: dict[str, Any]) -> None:
    """Every field one Microsoft's generated models of the job resource have, and writable."""
    from azure.ai.ml._restclient.arm_ml_service import models as ml

    nested = {
        ml.JobBase: {"properties": ml.CommandJob},
        ml.CommandJob: {"resources": ml.JobResourceConfiguration, "limits": ml.CommandJobLimits},
    }
    assert rest_field_problems(body, ml.JobBase, nested) == []
    for name, value in body["properties"].get("inputs", {}).items():
        assert rest_field_problems(value, ml.LiteralJobInput, {}, f"inputs.{name}") == []


def submit(tmp_path: Path, *argv: str, **outputs: str) -> int:
    return cli.main(["submit", "--outputs", str(outputs_file(tmp_path, **outputs)), "--no-stream", *argv])


# --- the job bodies --------------------------------------------------------------------------------


def user_code(tmp_path: Path) -> Path:
    code = tmp_path / "my-model"
    (code / "pkg").mkdir(parents=True)
    (code / "fit.py").write_text("import edge_train\n")
    (code / "pkg" / "__init__.py").write_text("")
    (code / "notes.csv").write_text("a,b\n")  # kept out by .amlignore, so neither copied nor refused
    (code / ".amlignore").write_text("*.csv\n")
    return code


def test_a_job_from_code_and_a_command(tmp_path, workspace, capsys) -> None:
    code = user_code(tmp_path)
    conda = tmp_path / "env.yaml"
    conda.write_text("name: mine\ndependencies:\n  - python=3.11\n")
    status = submit(
        tmp_path,
        "--code",
        str(code),
        "--command",
        'python fit.py --train "${{inputs.train}}" --holdout ${{inputs.holdout}} --epochs 3',
        "--input",
        "train=hub://training-data/churn 2024/*/",
        "--input",
        "holdout=hub://holdout-data/",
        "--environment",
        str(conda),
    )
    assert status == cli.OK, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out) == {"job": "job-1", "status": "Completed"}

    put = job_put(workspace)
    assert put.path.startswith(f"{BASE}/jobs/")
    assert put.query["api-version"][0].startswith("20")
    assert_valid_job_body(put.body)
    body = put.body["properties"]
    assert body["jobType"] == "Command"
    # The locations are on the command line, each one shell word however odd the prefix.
    assert shlex.split(body["command"]) == [
        "python",
        "fit.py",
        "--train",
        "hub://training-data/churn 2024/*/",
        "--holdout",
        "hub://holdout-data/",
        "--epochs",
        "3",
    ]
    assert "inputs" not in body or body["inputs"] == {}  # nothing for Azure ML to upload or mount
    assert body["environmentVariables"] == {
        "EDGE_INPUT_TRAIN": "hub://training-data/churn 2024/*/",
        "EDGE_INPUT_HOLDOUT": "hub://holdout-data/",
        "EDGE_ACCOUNT_URL": OUTPUTS["hubBlobEndpoint"],
        "EDGE_BLOB_API_VERSION": "2019-07-07",
        "PYTHONPATH": ".",
    }
    assert body["computeId"] == f"{BASE}/computes/edge-vm"
    assert body["experimentName"] == "edge-training"
    assert body["codeId"] == CODE_ID
    assert body["environmentId"] == ENVIRONMENT_ID
    assert body["resources"]["dockerArgs"] == MOUNT
    assert body["limits"] == {"jobLimitsType": "Command", "timeout": "PT6H"}
    assert body["tags"] == {
        "stack": "dev",
        "compute": "edge-vm",
        "compute_mode": "virtual-machine",
        "hub_input.train": "hub://training-data/churn 2024/*/",
        "hub_input.holdout": "hub://holdout-data/",
    }
    (environment,) = [r for r in workspace.fake.requests if r.method == "PUT" and "/environments/" in r.path]
    assert environment.body["properties"]["image"] == jobs.BASE_IMAGE
    assert yaml.safe_load(environment.body["properties"]["condaFile"]) == {
        "name": "mine",
        "dependencies": ["python=3.11"],
    }
    # The snapshot is the user's files as .amlignore leaves them, plus edge_train.
    assert snapshot_hash_asked(workspace) == expected_snapshot_hash(code, tmp_path)
    assert not any(r.method == "PUT" and "/codes/" in r.path for r in workspace.fake.requests)


@pytest.mark.parametrize("example", ["churn", "boosting"])
def test_each_example_as_a_job_file(tmp_path, workspace, example) -> None:
    assert submit(tmp_path, "-f", str(jobs.EXAMPLES / example / "job.yml")) == cli.OK
    body = job_put(workspace).body
    assert_valid_job_body(body)
    properties = body["properties"]
    spec = yaml.safe_load((jobs.EXAMPLES / example / "job.yml").read_text())
    argv = shlex.split(properties["command"])
    assert argv[:4] == ["python", "train.py", "--data", "hub://training-data/churn/"]
    # The literal inputs stay inputs (Azure ML substitutes them); the Hub one became a location.
    literal = {k: v for k, v in spec["inputs"].items() if k != "data"}
    assert properties["inputs"] == {k: {"jobInputType": "literal", "value": str(v)} for k, v in literal.items()}
    assert properties["environmentVariables"]["EDGE_INPUT_DATA"] == "hub://training-data/churn/"
    assert properties["displayName"] == spec["display_name"]
    assert properties["resources"]["dockerArgs"] == MOUNT
    (environment,) = [r for r in workspace.fake.requests if r.method == "PUT" and "/environments/" in r.path]
    conda = yaml.safe_load(environment.body["properties"]["condaFile"])
    pins = conda["dependencies"][-1]["pip"]
    assert "mlflow-skinny==3.17.2" in pins and "azureml-mlflow==1.62.0.post6" in pins
    assert snapshot_hash_asked(workspace) == expected_snapshot_hash(jobs.EXAMPLES / example, tmp_path)


def test_the_default_job_is_the_churn_example_on_the_stacks_container(tmp_path, workspace) -> None:
    assert submit(tmp_path, "--prefix", "2024/q1") == cli.OK
    argv = shlex.split(job_put(workspace).body["properties"]["command"])
    assert argv[2:4] == ["--data", "hub://training-data/2024/q1/"]


def test_kubernetes_mode_is_the_same_job_without_docker_args(tmp_path, workspace, arm) -> None:
    assert submit(tmp_path, "--prefix", "churn/") == cli.OK
    on_vm = job_put(workspace).body["properties"]
    arm.fake.requests.clear()
    assert submit(tmp_path, "--prefix", "churn/", edgeComputeMode="kubernetes") == cli.OK
    on_cluster = job_put(workspace).body["properties"]
    assert "dockerArgs" not in (on_cluster.get("resources") or {})
    assert on_cluster["tags"]["compute_mode"] == "kubernetes"
    # Everything else is identical: one code path builds both.
    for body in (on_vm, on_cluster):
        body.get("resources", {}).pop("dockerArgs", None)
        body["tags"].pop("compute_mode")
        if body.get("resources") in ({}, {"properties": {}}):
            body.pop("resources")
    assert on_vm == on_cluster


@pytest.mark.parametrize(
    ("argv", "outputs", "expected"),
    [
        ((), {}, "2019-07-07"),
        ((), {"hubBlobApiVersion": "2020-08-04"}, "2020-08-04"),
        (("--blob-api-version", "2021-04-10"), {"hubBlobApiVersion": "2020-08-04"}, "2021-04-10"),
    ],
)
def test_the_blob_api_version_reaches_the_job(tmp_path, workspace, argv, outputs, expected) -> None:
    assert submit(tmp_path, "--prefix", "churn/", *argv, **outputs) == cli.OK
    assert job_put(workspace).body["properties"]["environmentVariables"]["EDGE_BLOB_API_VERSION"] == expected


# --- dry run ---------------------------------------------------------------------------------------


def test_dry_run_prints_the_job_and_sends_nothing(tmp_path, workspace, capsys) -> None:
    assert submit(tmp_path, "-f", str(jobs.EXAMPLES / "churn" / "job.yml"), "--dry-run") == cli.OK
    printed = capsys.readouterr().out
    assert workspace.fake.requests == []
    spec = yaml.safe_load(printed)  # the comment lines are YAML comments
    assert spec["compute"] == "azureml:edge-vm"
    assert spec["code"] == str(jobs.EXAMPLES / "churn")
    assert spec["environment_variables"]["EDGE_INPUT_DATA"] == "hub://training-data/churn/"
    assert spec["resources"] == {"docker_args": MOUNT}
    assert "data" not in spec["inputs"]
    assert printed.rstrip().splitlines()[-1] == "# egress guard: nothing leaves the edge but code"
    # What it prints is a job azure-ai-ml accepts as it is.
    from azure.ai.ml import load_job

    (tmp_path / "printed.yml").write_text(printed)
    assert load_job(tmp_path / "printed.yml").compute == "edge-vm"


def test_dry_run_of_a_refused_job_shows_the_findings(tmp_path, workspace, capsys) -> None:
    code = user_code(tmp_path)
    (code / "features.parquet").write_bytes(b"PAR1")
    assert submit(tmp_path, "--code", str(code), "--command", "python fit.py", "--dry-run") == cli.USAGE
    assert "features.parquet" in capsys.readouterr().out.splitlines()[-1]
    assert workspace.fake.requests == []


# --- the egress guard, whatever the job's shape ----------------------------------------------------

COMMAND = {"type": "command", "code": "src", "command": "python fit.py"}
GUARD_CASES = {
    "file URL input": ({**COMMAND, "inputs": {"data": {"type": "uri_folder", "path": "file:///data"}}}, "file:///data"),
    "relative input": ({**COMMAND, "inputs": {"data": {"type": "uri_folder", "path": "./data"}}}, "./data"),
    "absolute input": ({**COMMAND, "inputs": {"data": {"type": "uri_file", "path": "/srv/x.csv"}}}, "/srv/x.csv"),
    "mltable input": ({**COMMAND, "inputs": {"t": {"type": "mltable", "path": "./table"}}}, "./table"),
    "output to a datastore": (
        {
            **COMMAND,
            "outputs": {"dump": {"type": "uri_folder", "path": "azureml://datastores/workspaceblobstore/paths/x/"}},
        },
        "azureml://datastores/workspaceblobstore/paths/x/",
    ),
    "secret variable": ({**COMMAND, "environment_variables": {"STORAGE_KEY": "abc"}}, "STORAGE_KEY"),
    "secret value": ({**COMMAND, "environment_variables": {"URL": "https://a/c?sv=1&sig=abc"}}, "URL"),
    "a pipeline step's input": (
        {
            "type": "pipeline",
            "jobs": {
                "prep": {
                    **COMMAND,
                    "environment": {"image": "python:3.11"},
                    "inputs": {"raw": {"type": "uri_folder", "path": "file:///data"}},
                }
            },
        },
        "file:///data",
    ),
    "a sweep trial's data": (
        {
            "type": "sweep",
            "trial": {
                "code": "src",
                "command": "python fit.py --lr ${{search_space.lr}}",
                "environment": {"image": "python:3.11"},
            },
            "search_space": {"lr": {"type": "choice", "values": [0.1]}},
            "objective": {"goal": "maximize", "primary_metric": "auc"},
            "sampling_algorithm": "random",
            "limits": {"max_total_trials": 1},
            "compute": "azureml:edge-vm",
        },
        "dump.npy",
    ),
}


@pytest.mark.parametrize("case", list(GUARD_CASES))
def test_the_egress_guard_refuses_before_any_request(tmp_path, workspace, capsys, case) -> None:
    spec, named = GUARD_CASES[case]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "fit.py").write_text("")
    (tmp_path / "src" / "dump.npy").write_bytes(b"\x93NUMPY")  # only the sweep case has no .amlignore for it
    if case != "a sweep trial's data":
        (tmp_path / "src" / ".amlignore").write_text("*.npy\n")
    job_file = tmp_path / "job.yml"
    job_file.write_text(yaml.safe_dump(spec))
    assert submit(tmp_path, "-f", str(job_file)) == cli.USAGE
    error = capsys.readouterr().err
    assert error.startswith("error: refusing to submit") and named in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert workspace.fake.requests == []


def test_a_code_snapshot_carrying_data_is_refused(tmp_path, workspace, capsys) -> None:
    code = user_code(tmp_path)
    (code / "pkg" / "cache.npz").write_bytes(b"PK")
    (code / "weights.bin").write_bytes(b"\0" * (jobs.MAX_CODE_FILE_BYTES + 1))
    assert submit(tmp_path, "--code", str(code), "--command", "python fit.py") == cli.USAGE
    error = capsys.readouterr().err
    assert "pkg/cache.npz" in error and "weights.bin" in error and "notes.csv" not in error
    assert workspace.fake.requests == []


def test_data_reached_through_a_symlink_is_seen(tmp_path, workspace, capsys) -> None:
    code = user_code(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.parquet").write_bytes(b"PAR1")
    (code / "linked").symlink_to(tmp_path / "elsewhere")
    assert submit(tmp_path, "--code", str(code), "--command", "python fit.py") == cli.USAGE
    assert "linked/x.parquet" in capsys.readouterr().err
    assert workspace.fake.requests == []


def test_remote_inputs_pass_the_guard(tmp_path) -> None:
    from azure.ai.ml import Input, command

    job = command(
        command="python x.py",
        inputs={
            "a": Input(type="uri_folder", path="azureml://datastores/hub/paths/x/"),
            "b": Input(type="uri_file", path="https://example.blob.core.windows.net/c/x.csv"),
            "c": Input(type="uri_folder", path="azureml:my-data:1"),
        },
        environment="azureml:env:1",
    )
    assert jobs.egress_findings(job) == []


# --- how a job ends -----------------------------------------------------------------------------------


def test_a_failed_job_ends_with_the_services_error_in_one_paragraph(tmp_path, workspace, capsys) -> None:
    workspace.fake.script(
        "GET",
        f"{BASE}/jobs/job-1",
        Reply(200, job_json("job-1", "Failed")),
    )
    assert submit(tmp_path, "--prefix", "churn/") == cli.JOB_FAILED
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"job": "job-1", "status": "Failed"}
    assert captured.err.startswith("error: job job-1 ended Failed: ")
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err


class StubJobs:
    """The job operations' control flow only (create, stream, get): how submit reacts to a
    stream that raises, which the stand-in cannot serve (it needs run history)."""

    def __init__(self, status: str, stream_error: str | None = None) -> None:
        self.calls: list[str] = []
        self.status, self.stream_error = status, stream_error

    def create_or_update(self, job: Any) -> Any:
        self.calls.append("create")
        return type("J", (), {"name": "job-1", "studio_url": ""})()

    def stream(self, name: str) -> None:
        self.calls.append(f"stream {name}")
        if self.stream_error:
            from azure.ai.ml.exceptions import JobException

            raise JobException(message=self.stream_error, no_personal_data_message="job failed")

    def get(self, name: str) -> Any:
        return type("J", (), {"status": self.status, "error": None, "studio_url": "https://ml.azure.com/x"})()


def test_a_streamed_failure_is_one_paragraph_of_the_services_message(tmp_path, monkeypatch, capsys) -> None:
    failing = type("C", (), {"jobs": StubJobs("Failed", "Execution failed: ModuleNotFoundError sklearn\n\nlog tail")})()
    monkeypatch.setattr("training.workspace.ml_client", lambda _outputs: failing)
    status = cli.main(["submit", "--outputs", str(outputs_file(tmp_path)), "--prefix", "x/"])
    assert status == cli.JOB_FAILED
    assert failing.jobs.calls == ["create", "stream job-1"]
    err = capsys.readouterr().err
    assert err == "error: job job-1 ended Failed: Execution failed: ModuleNotFoundError sklearn log tail\n"


def test_a_cancelled_job_without_streaming_says_where_to_look(tmp_path, monkeypatch, capsys) -> None:
    cancelled = type("C", (), {"jobs": StubJobs("Canceled")})()
    monkeypatch.setattr("training.workspace.ml_client", lambda _outputs: cancelled)
    assert submit(tmp_path, "--prefix", "x/") == cli.JOB_FAILED
    assert "ended Canceled: job ended Canceled; see https://ml.azure.com/x" in capsys.readouterr().err


# --- register at the HTTP boundary ------------------------------------------------------------------


def version_json(name: str, version: str, **properties: Any) -> dict[str, Any]:
    outputs = stack_outputs.StackOutputs.from_mapping(OUTPUTS, "test")
    return {
        "id": f"{models_path(outputs, name)}/{version}",
        "name": version,
        "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
        "properties": {
            "modelType": "mlflow_model",
            "modelUri": "azureml://x",
            "flavors": {},
            "tags": {},
            "properties": {},
            "isAnonymous": False,
            "isArchived": False,
            **properties,
        },
    }


def test_register_sends_the_next_mlflow_model_version_with_its_lineage(
    tmp_path, workspace, tiny_models, capsys
) -> None:
    outputs = stack_outputs.StackOutputs.from_mapping(OUTPUTS, "test")
    base = models_path(outputs, "edge-model")
    # Version 7 is archived: its number stays taken, so only a listing of all versions is right.
    listed = [version_json("edge-model", "1"), version_json("edge-model", "7", isArchived=True)]
    workspace.fake.script("GET", base, Reply(200, {"value": listed}))
    workspace.fake.script("PUT", f"{base}/8", Reply(201, version_json("edge-model", "8")))
    lineage = tmp_path / "lineage.json"
    lineage.write_text(json.dumps({"data_fingerprint": "f" * 64, "hyperparameters": {"c": 0.5}}))
    argv = ["register", "--outputs", str(outputs_file(tmp_path)), "--job", "job-42", "--lineage", str(lineage)]
    assert cli.main([*argv, "--model-dir", str(tiny_models["boosted"])]) == cli.OK
    assert json.loads(capsys.readouterr().out) == {"model": "edge-model", "version": "8"}

    listing = next(r for r in workspace.fake.requests if r.method == "GET" and "listViewType" in r.query)
    assert listing.query["listViewType"] == ["All"]
    (put,) = [r for r in workspace.fake.requests if r.method == "PUT"]
    assert put.path == f"{base}/8"
    body = put.body["properties"]
    assert body["modelType"] == "mlflow_model"
    assert body["modelUri"] == "azureml://jobs/job-42/outputs/artifacts/paths/outputs/model/"
    tags = dict(body["tags"])
    assert re.fullmatch(r"([0-9a-f]{40}(-dirty)?|unknown)", tags.pop("git_commit"))
    assert tags == {
        "data_fingerprint": "f" * 64,
        "job": "job-42",
        "compute": "edge-vm",
        "stack": "dev",
        "hyperparameters": '{"c": 0.5}',
        "egress_audit": "passed (no training rows at hand to compare)",
    }
    from azure.ai.ml._restclient.arm_ml_service import models as ml

    nested = {ml.ModelVersion: {"properties": ml.ModelVersionProperties}}
    assert rest_field_problems(put.body, ml.ModelVersion, nested) == []


@dataclass
class JobArtifacts:
    root: Path
    downloads: list[str]


@pytest.fixture
def job_artifacts(monkeypatch, tmp_path) -> JobArtifacts:
    """The job's artifacts as azure-ai-ml's jobs.download lays them out (<path>/artifacts/outputs/...):
    the artifact store's blob download is the one part not served by the stand-in."""
    from azure.ai.ml.operations import JobOperations

    artifacts = JobArtifacts(tmp_path / "job-artifacts", [])

    def download(self, name, *, download_path=".", output_name=None, all=False):
        artifacts.downloads.append(name)
        shutil.copytree(artifacts.root, Path(download_path) / "artifacts")

    monkeypatch.setattr(JobOperations, "download", download)
    return artifacts


@pytest.mark.parametrize("dry_run", [False, True])
def test_register_refuses_a_model_that_keeps_its_training_rows_and_sends_nothing(
    tmp_path, workspace, tiny_models, job_artifacts, capsys, dry_run
) -> None:
    shutil.copytree(tiny_models["knn"], job_artifacts.root / "outputs" / "model")
    argv = ["register", "--outputs", str(outputs_file(tmp_path)), "--job", "job-42", "--data-fingerprint", "f" * 64]
    assert cli.main(argv + ["--dry-run"] * dry_run) == cli.USAGE
    assert "error: the model may carry training rows: model.steps[1][1]._fit_X" in capsys.readouterr().err
    assert job_artifacts.downloads == ["job-42"]
    assert workspace.fake.requests == []  # not even the version listing


def test_register_with_a_reason_registers_and_tags_the_findings(
    tmp_path, workspace, tiny_models, job_artifacts, capsys
):
    outputs = stack_outputs.StackOutputs.from_mapping(OUTPUTS, "test")
    base = models_path(outputs, "edge-model")
    workspace.fake.script("GET", base, Reply(200, {"value": []}))
    workspace.fake.script("PUT", f"{base}/1", Reply(201, version_json("edge-model", "1")))
    shutil.copytree(tiny_models["svm"], job_artifacts.root / "outputs" / "model")
    argv = ["register", "--outputs", str(outputs_file(tmp_path)), "--job", "job-42", "--data-fingerprint", "f" * 64]
    assert cli.main([*argv, "--allow-model-egress", "synthetic rows only"]) == cli.OK
    (put,) = [r for r in workspace.fake.requests if r.method == "PUT"]
    tags = put.body["properties"]["tags"]
    assert tags["egress_audit"] == "allowed: synthetic rows only"
    assert json.loads(tags["egress_findings"])[0].startswith("model.support_vectors_: support vector machines")


def test_register_without_a_model_among_the_jobs_artifacts_says_so(tmp_path, workspace, job_artifacts, capsys) -> None:
    (job_artifacts.root / "outputs" / "logs").mkdir(parents=True)
    argv = ["register", "--outputs", str(outputs_file(tmp_path)), "--job", "job-42", "--data-fingerprint", "f" * 64]
    assert cli.main(argv) == cli.USAGE
    assert "error: job job-42 has no outputs/model/ among its artifacts" in capsys.readouterr().err


def test_register_starts_at_version_one(workspace) -> None:
    outputs = stack_outputs.StackOutputs.from_mapping(OUTPUTS, "test")
    base = models_path(outputs, "new-model")
    workspace.fake.script("GET", base, Reply(200, {"value": []}))
    workspace.fake.script("PUT", f"{base}/1", Reply(201, version_json("new-model", "1")))
    client = ml_client(outputs, credential=StaticCredential(), transport=RedirectingTransport(workspace))
    assert registry.register(client, outputs, "new-model", registry.Lineage("j", "a" * 64, {}, "c")).version == "1"


def test_git_commit_marks_a_dirty_tree(tmp_path) -> None:
    assert registry.git_commit(tmp_path) == "unknown"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert registry.git_commit(repo) == head
    (repo / "train.py").write_text("print(2)\n")
    assert registry.git_commit(repo) == f"{head}-dirty"


def test_an_image_replaces_the_environment_as_it_is(tmp_path, workspace) -> None:
    image = "credge.azurecr.io/trainers/torch:2.6"
    assert submit(tmp_path, "-f", str(jobs.EXAMPLES / "boosting" / "job.yml"), "--image", image) == cli.OK
    (environment,) = [r for r in workspace.fake.requests if r.method == "PUT" and "/environments/" in r.path]
    assert environment.body["properties"]["image"] == image
    assert "condaFile" not in environment.body["properties"]
