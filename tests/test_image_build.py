"""`package` with ACR Tasks: the real azure-mgmt-containerregistry client against the local HTTPS
Resource Manager stand-in, the build context and the run log in Azurite (SAS URLs, as ACR hands out)."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.mgmt.containerregistry.v2025_03_01_preview import models as acr
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from tests.harness.arm_models import check_body
from tests.harness.arm_server import ArmEndpoint, Reply, StaticCredential
from training import cli, image_build

SUB, RG, REGISTRY = "00000000-0000-0000-0000-000000000001", "rg-edge", "credge"
LOGIN = f"{REGISTRY}.azurecr.io"
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
DIGEST = "sha256:" + "ab" * 32
SPEC = image_build.ImageSpec("Edge-Model", "7", "f" * 64, "c" * 40)


MLMODEL = """flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.skops
  sklearn:
    pickled_model: model.skops
    serialization_format: skops
signature:
  inputs: '[{"type": "double", "name": "f0", "required": true}, {"type": "double", "name": "f1", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"""


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An MLflow model folder as mlflow.sklearn.save_model writes it (the bytes of the model do
    not matter to the build context)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text(MLMODEL)
    (folder / "model.skops").write_bytes(b"not really a model")
    (folder / "requirements.txt").write_text("mlflow-skinny==3.17.2\nscikit-learn==1.9.1\nskops==0.16.0")
    return folder


@dataclass
class Blobs:
    service: BlobServiceClient
    container: str

    def sas_url(self, name: str, permission: BlobSasPermissions) -> str:
        client = self.service.get_blob_client(self.container, name)
        token = generate_blob_sas(
            client.account_name,
            self.container,
            name,
            account_key=self.service.credential.account_key,
            permission=permission,
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
        )
        return f"{client.url}?{token}"


@pytest.fixture
def blobs(azurite, request) -> Iterator[Blobs]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"acr-{abs(hash(request.node.name)) % 10**10}"
    service.create_container(container)
    yield Blobs(service, container)
    service.delete_container(container)
    service.close()


def client(arm: ArmEndpoint):
    return image_build.registry_client(SUB, StaticCredential(), base_url=arm.url, transport=arm.transport())


def run_body(status: str, images: list[dict] | None = None, error: str | None = None) -> dict:
    properties = {"runId": "cb7", "status": status, "runType": "QuickRun", "outputImages": images or []}
    if error:
        properties["runErrorMessage"] = error
    return {"id": f"{BASE}/runs/cb7", "name": "cb7", "type": "Microsoft.ContainerRegistry/registries/runs",
            "properties": properties}  # fmt: skip


LOG_CHUNKS = ["Step 1/12 : FROM python:3.11-slim\n", "Step 12/12 : CMD [...]\nSuccessfully ", "tagged edge-model:7\n"]


def script_build(arm: ArmEndpoint, blobs: Blobs, final: dict) -> None:
    upload = blobs.sas_url("source/context.tar.gz", BlobSasPermissions(create=True, write=True))
    arm.fake.script(
        "POST",
        f"{BASE}/listBuildSourceUploadUrl",
        Reply(200, {"uploadUrl": upload, "relativePath": "source/202611250000/context.tar.gz"}),
    )
    arm.fake.script("POST", f"{BASE}/scheduleRun", Reply(200, run_body("Queued")))
    arm.fake.script("GET", f"{BASE}/runs/cb7", Reply(200, run_body("Running")), Reply(200, run_body("Running")),
                    Reply(200, final))  # fmt: skip
    log_link = blobs.sas_url("logs/cb7/rawtext.log", BlobSasPermissions(read=True))
    arm.fake.script("POST", f"{BASE}/runs/cb7/listLogSasUrl", Reply(200, {"logLink": log_link}))
    log = blobs.service.get_blob_client(blobs.container, "logs/cb7/rawtext.log")
    log.create_append_blob()
    log.append_block(LOG_CHUNKS[0].encode())


class GrowingLog:
    """The build's progress between polls: each wait, the next log chunk is appended."""

    def __init__(self, blobs: Blobs) -> None:
        self.blob = blobs.service.get_blob_client(blobs.container, "logs/cb7/rawtext.log")
        self.next = 1
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.next < len(LOG_CHUNKS):
            self.blob.append_block(LOG_CHUNKS[self.next].encode())
            self.next += 1


SUCCEEDED = run_body("Succeeded", [{"registry": LOGIN, "repository": "edge-model", "tag": "7", "digest": DIGEST}])


def test_the_build_context_holds_the_model_and_serving_code_only(model_dir) -> None:
    names = image_build.context_names(image_build.build_context(model_dir))
    assert names == [
        "Dockerfile", "requirements.txt", "score.py", "server_worker.py",
        "model/MLmodel", "model/model.skops", "model/requirements.txt",
    ]  # fmt: skip
    assert image_build.build_context(model_dir) == image_build.build_context(model_dir)  # reproducible


@pytest.mark.parametrize("name", ["train.csv", "part-000.parquet", "sub/batch.npz"])
def test_a_model_folder_holding_data_is_refused(model_dir, name) -> None:
    (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (model_dir / name).write_text("x")
    with pytest.raises(image_build.ImageBuildError, match=f"holds data files.*{name}"):
        image_build.build_context(model_dir)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: (d / "MLmodel").unlink(), "is not an MLflow model (no MLmodel file in it)"),
        (lambda d: (d / "MLmodel").write_text(MLMODEL.split("signature:")[0]), "it has no signature"),
        (lambda d: (d / "MLmodel").write_text(MLMODEL.replace("python_function", "keras")),
         "no python_function flavor"),
        (lambda d: (d / "requirements.txt").unlink(), "it has no requirements.txt"),
        (lambda d: (d / "requirements.txt").write_text("mlflow-skinny==3.17.2\nscikit-learn>=1.5\n"),
         "not NAME==VERSION: scikit-learn>=1.5"),
        (lambda d: (d / "requirements.txt").write_text("-r other.txt\n"), "not NAME==VERSION: -r other.txt"),
        (lambda d: (d / "requirements.txt").write_text("--index-url=https://example.com/simple\n"),
         "not NAME==VERSION"),
        (lambda d: (d / "requirements.txt").write_text("# nothing\n"), "requirements.txt is empty"),
        (lambda d: (d / "requirements.txt").write_text("Scikit_Learn==1.8.0\n"),
         "disagrees with the server's pins: Scikit_Learn==1.8.0 (the server pins scikit-learn==1.9.1)"),
    ],
)  # fmt: skip
def test_a_model_that_cannot_be_served_as_it_is_is_refused_with_the_reason(model_dir, change, problem) -> None:
    change(model_dir)
    with pytest.raises(image_build.ImageBuildError, match=re.escape(problem)):
        image_build.build_context(model_dir)


def test_pins_that_agree_with_the_servers_pass_however_the_names_are_spelled(model_dir) -> None:
    # PyPI names compare case-insensitively with runs of - _ . as one (PEP 503).
    (model_dir / "requirements.txt").write_text("Scikit_Learn==1.9.1\nMLflow.Skinny==3.17.2\nlightgbm==4.7.0\n")
    assert "model/requirements.txt" in image_build.context_names(image_build.build_context(model_dir))


def test_a_build_uploads_the_context_schedules_a_docker_build_and_reports_the_digest(arm, blobs, model_dir) -> None:
    script_build(arm, blobs, SUCCEEDED)
    context = image_build.build_context(model_dir)
    lines: list[str] = []
    progress = GrowingLog(blobs)
    built = image_build.build_image(
        client(arm), RG, REGISTRY, LOGIN, SPEC, context, emit=lines.append, clock=progress.clock, sleep=progress.sleep
    )

    assert built == image_build.BuiltImage("cb7", f"{LOGIN}/edge-model@{DIGEST}", f"{LOGIN}/edge-model:7", DIGEST)
    uploaded = blobs.service.get_blob_client(blobs.container, "source/context.tar.gz").download_blob().readall()
    assert uploaded == context
    # The whole log, streamed line by line while the run went on.
    streamed = ["Step 1/12 : FROM python:3.11-slim", "Step 12/12 : CMD [...]", "Successfully tagged edge-model:7"]
    assert lines[1:] == streamed

    schedule = next(r for r in arm.fake.requests if r.path.endswith("/scheduleRun"))
    assert {r.query["api-version"][0] for r in arm.fake.requests} == {"2025-03-01-preview"}
    assert check_body(acr.DockerBuildRequest, schedule.body) == []
    assert schedule.body["type"] == "DockerBuildRequest"
    assert schedule.body["sourceLocation"] == "source/202611250000/context.tar.gz"
    assert schedule.body["dockerFilePath"] == "Dockerfile"
    assert schedule.body["imageNames"] == ["edge-model:7"]
    assert schedule.body["isPushEnabled"] is True
    assert schedule.body["platform"] == {"os": "Linux", "architecture": "amd64"}
    assert {a["name"]: a["value"] for a in schedule.body["arguments"]} == {
        "MODEL_NAME": "Edge-Model",
        "MODEL_VERSION": "7",
        "DATA_FINGERPRINT": "f" * 64,
        "GIT_COMMIT": "c" * 40,
    }
    assert all(r.headers["authorization"] == "Bearer test-bearer-token-edge-training" for r in arm.fake.requests)


def test_a_failed_build_raises_with_its_log_tail(arm, blobs, model_dir) -> None:
    script_build(arm, blobs, run_body("Failed", error="failed to build the image"))
    progress = GrowingLog(blobs)
    with pytest.raises(image_build.ImageBuildError) as caught:
        image_build.build_image(
            client(arm), RG, REGISTRY, LOGIN, SPEC, image_build.build_context(model_dir),
            emit=lambda _: None, clock=progress.clock, sleep=progress.sleep,
        )  # fmt: skip
    message = str(caught.value)
    assert "run cb7 ended Failed (failed to build the image)" in message
    assert "Successfully tagged edge-model:7" in message.splitlines()[-1]
    assert "sig=" not in message  # no SAS in the error


def test_a_build_that_never_ends_stops_at_its_deadline(arm, blobs, model_dir) -> None:
    script_build(arm, blobs, run_body("Running"))
    progress = GrowingLog(blobs)
    with pytest.raises(image_build.ImageBuildError, match="still Running after 300s"):
        image_build.build_image(
            client(arm), RG, REGISTRY, LOGIN, SPEC, image_build.build_context(model_dir),
            timeout_seconds=300, emit=lambda _: None, clock=progress.clock, sleep=progress.sleep,
        )  # fmt: skip
    assert progress.now >= 300


def test_a_success_without_the_image_is_an_error(arm, blobs, model_dir) -> None:
    other = run_body("Succeeded", [{"registry": LOGIN, "repository": "edge-model", "tag": "6", "digest": DIGEST}])
    script_build(arm, blobs, other)
    progress = GrowingLog(blobs)
    with pytest.raises(image_build.ImageBuildError, match="reported no image edge-model:7"):
        image_build.build_image(
            client(arm), RG, REGISTRY, LOGIN, SPEC, image_build.build_context(model_dir),
            emit=lambda _: None, clock=progress.clock, sleep=progress.sleep,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (image_build.ImageSpec("---", "1", "f", "c"), "gives no valid repository name"),
        (image_build.ImageSpec("m", "1 2", "f", "c"), "is not a valid image tag"),
    ],
)
def test_names_that_cannot_be_image_references_are_refused(spec, message) -> None:
    with pytest.raises(image_build.ImageBuildError, match=message):
        _ = spec.tag


@pytest.fixture
def logged_model(tiny_models, tmp_path: Path) -> Path:
    """A real model (the audit loads it), in a run's outputs/ folder."""
    folder = tmp_path / "outputs" / "model"
    shutil.copytree(tiny_models["linear"], folder)
    return folder


def test_package_through_the_cli_fails_with_the_log_tail_and_a_nonzero_exit(
    arm, blobs, logged_model, tmp_path, monkeypatch, capsys
) -> None:
    model_dir = logged_model
    script_build(arm, blobs, run_body("Failed", error="step 3 failed"))
    real = client(arm)  # the real client, built before its factory is pointed at the stand-in
    monkeypatch.setattr(image_build, "registry_client", lambda subscription: real if subscription == SUB else None)
    monkeypatch.setattr(image_build.time, "sleep", GrowingLog(blobs).sleep)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(stack_outputs()))
    code = cli.main(["package", "--outputs", str(outputs), "--model", "Edge-Model", "--version", "7",
                     "--model-dir", str(model_dir), "--data-fingerprint", "f" * 64])  # fmt: skip
    assert code == cli.JOB_FAILED
    error = capsys.readouterr().err
    assert "run cb7 ended Failed (step 3 failed)" in error and "Successfully tagged edge-model:7" in error


def stack_outputs() -> dict[str, str]:
    return {
        "stackName": "dev", "experimentName": "edge-training", "azureSubscriptionId": SUB,
        "resourceGroupName": RG, "workspaceName": "mlw", "registryLoginServer": LOGIN, "registryName": REGISTRY,
        "computeName": "edge-vm", "hubBlobEndpoint": "https://hub/", "hubDataContainer": "training-data",
        "hubVmPublicIp": "192.0.2.1", "hubVmAdminUsername": "azureuser", "sshHostKeyFingerprint": "SHA256:x",
    }  # fmt: skip


def test_the_tarball_is_a_gzip_tar(model_dir, tmp_path) -> None:
    path = tmp_path / "context.tar.gz"
    path.write_bytes(image_build.build_context(model_dir))
    with tarfile.open(path, "r:gz") as archive:
        assert archive.extractfile("score.py").read() == (image_build.SCORE).read_bytes()


def test_azureml_packaging_copies_the_model_into_the_image() -> None:
    from training import packaging

    rest = packaging.package_request("edge-model", "7", "azureml:edge-training-serving:1")._to_rest_object()
    assert rest["modelConfiguration"] == {"mode": "Copy"}  # not Download: the Hub cannot reach the workspace


def test_a_local_model_takes_its_fingerprint_from_the_runs_lineage(model_dir) -> None:
    from training import packaging

    (model_dir.parent / "lineage.json").write_text(json.dumps({"data_fingerprint": "d" * 64}))
    assert packaging.local_model("m", "1", model_dir, None, "c" * 40).data_fingerprint == "d" * 64
    (model_dir.parent / "lineage.json").unlink()
    with pytest.raises(image_build.ImageBuildError, match="pass --data-fingerprint"):
        packaging.local_model("m", "1", model_dir, None, "c" * 40)


def test_package_through_the_cli_prints_the_image_by_digest(
    arm, blobs, logged_model, tmp_path, monkeypatch, capsys
) -> None:
    model_dir = logged_model
    script_build(arm, blobs, SUCCEEDED)
    (model_dir.parent / "lineage.json").write_text(json.dumps({"data_fingerprint": "f" * 64}))
    real = client(arm)
    monkeypatch.setattr(image_build, "registry_client", lambda subscription: real if subscription == SUB else None)
    monkeypatch.setattr(image_build.time, "sleep", GrowingLog(blobs).sleep)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(stack_outputs()))
    argv = ["package", "--outputs", str(outputs), "--model", "Edge-Model", "--version", "7"]
    argv += ["--model-dir", str(model_dir)]
    assert cli.main(argv) == cli.OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"image": f"{LOGIN}/edge-model@{DIGEST}", "tag": f"{LOGIN}/edge-model:7", "digest": DIGEST,
                       "run": "cb7"}  # fmt: skip
    schedule = next(r for r in arm.fake.requests if r.path.endswith("/scheduleRun"))
    arguments = {a["name"]: a["value"] for a in schedule.body["arguments"]}
    assert arguments["DATA_FINGERPRINT"] == "f" * 64 and len(arguments["GIT_COMMIT"].removesuffix("-dirty")) == 40


def test_a_failed_upload_is_reported_without_the_upload_sas(arm, blobs, model_dir) -> None:
    script_build(arm, blobs, SUCCEEDED)
    # A SAS for another container: the storage refuses it, as it would an expired one.
    gone = blobs.sas_url("source/context.tar.gz", BlobSasPermissions(create=True, write=True)).replace(
        f"/{blobs.container}/", "/no-such-container/"
    )
    arm.fake.script("POST", f"{BASE}/listBuildSourceUploadUrl", Reply(200, {"uploadUrl": gone, "relativePath": "x"}))
    with pytest.raises(image_build.ImageBuildError) as caught:
        image_build.build_image(client(arm), RG, REGISTRY, LOGIN, SPEC, image_build.build_context(model_dir))
    assert str(caught.value) == f"uploading the build context to {REGISTRY} failed (AuthorizationFailure)"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not any(r.path.endswith("/scheduleRun") for r in arm.fake.requests)  # nothing built from nothing


@pytest.mark.parametrize(
    ("tags", "missing"),
    [({}, "data_fingerprint, git_commit"), ({"data_fingerprint": "f" * 64}, "git_commit"),
     ({"data_fingerprint": "", "git_commit": "c" * 40}, "data_fingerprint")],
)  # fmt: skip
def test_a_registered_model_without_lineage_is_refused_before_download(arm, tmp_path, tags, missing) -> None:
    """Through the real MLClient: the image's labels come from the tags `register` sets."""
    from tests.test_cloud_endpoint import OUTPUTS, WS
    from tests.test_training_cli import RedirectingTransport
    from training import packaging
    from training.workspace import ml_client

    version = {"id": f"{WS}/models/edge-model/versions/3", "name": "3",
               "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
               "properties": {"modelType": "custom_model", "modelUri": "azureml://x", "flavors": {}, "tags": tags,
                              "properties": {}, "isAnonymous": False, "isArchived": False}}  # fmt: skip
    arm.fake.script("GET", f"{WS}/models/edge-model/versions/3", Reply(200, version))
    client = ml_client(OUTPUTS, credential=StaticCredential(), transport=RedirectingTransport(arm))
    refused = f"edge-model:3 lacks the tags {missing} that `register` sets"
    with pytest.raises(image_build.ImageBuildError, match=refused):
        packaging.registered_model(client, "edge-model", "3", tmp_path)
    assert [r.method for r in arm.fake.requests] == ["GET"]  # nothing downloaded
