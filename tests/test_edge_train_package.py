"""edge_train as a package of its own, and the examples that use it, against Azurite with MLflow.

The package is installed into a fresh virtualenv (no build isolation, no index: offline), and an
example trainer, copied out of the repository the way a job's code snapshot is, runs there as a
script; what it logged is read back with MLflow's own client."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from tests.harness import services
from training import jobs, local
from training.src.edge_train.location import HubLocation, LocationError

ROOT = Path(__file__).resolve().parent.parent


# --- locations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "container", "prefix"),
    [
        ("hub://training-data/churn/", "training-data", "churn/"),
        ("hub://training-data/churn", "training-data", "churn/"),
        ("hub://training-data/", "training-data", ""),
        ("hub://training-data", "training-data", ""),
        ("hub://training-data/a//b/./c", "training-data", "a/b/c/"),
        ("hub://abc/with space/*/", "abc", "with space/*/"),
    ],
)
def test_locations_are_normalised(uri, container, prefix) -> None:
    location = HubLocation.parse(uri)
    assert (location.container, location.prefix) == (container, prefix)
    assert HubLocation.parse(location.uri) == location


@pytest.mark.parametrize(
    "uri",
    [
        "hub://training-data/../other/",
        "hub://training-data/a/../../x",
        "hub://training-data//etc/",
        "hub://training-data/a\\..\\b",
        "hub://Training-Data/x",
        "hub://ab/x",
        "hub://a--b/x",
        "file:///data",
        "https://acct.blob.core.windows.net/c/x",
        "hub://training-data/a\nb",
    ],
)
def test_locations_that_leave_their_container_are_refused(uri) -> None:
    with pytest.raises(LocationError):
        HubLocation.parse(uri)


# --- the package, installed on its own -----------------------------------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with edge_train installed from training/src. Its dependencies come from
    the project's environment through a .pth file (kept offline and quick); edge_train itself is
    only in the new environment's site-packages."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # From a copy: setuptools builds in the source folder (build/, *.egg-info), which must stay clean.
    source = tmp_path_factory.mktemp("source") / "src"
    shutil.copytree(
        ROOT / "training" / "src", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(source),
        ],
        check=True,
        timeout=300,
    )
    return root


def test_the_package_installs_and_exposes_its_api(venv) -> None:
    probe = (
        "import json, edge_train, sys; "
        "print(json.dumps({'file': edge_train.__file__, 'api': sorted(edge_train.__all__), "
        "'blob_sdk_loaded': 'azure.storage.blob' in sys.modules}))"
    )
    out = subprocess.run(
        [venv / "bin" / "python", "-c", probe], cwd=venv, check=True, capture_output=True, text=True, timeout=60
    )
    found = json.loads(out.stdout)
    assert found["file"].startswith(str(venv)) and "site-packages" in found["file"]
    assert {"stage", "fingerprint", "lineage_tags", "HubLocation", "Staged"} <= set(found["api"])
    assert found["blob_sdk_loaded"] is False  # importing it (or parsing a location) is cheap


def test_the_job_environment_pins_what_the_project_tests_with() -> None:
    """The conda spec the job is built from pins the same versions this suite runs (azureml-mlflow
    only exists in jobs: it talks to the workspace)."""
    conda = yaml.safe_load(jobs.CONDA_FILE.read_text())
    pins = dict(p.split("==") for p in conda["dependencies"][-1]["pip"])
    assert pins.pop("azureml-mlflow")
    assert {name: importlib.metadata.version(name) for name in pins} == pins


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One local MLflow store for both examples, each in an experiment of its own: making a store
    runs every one of MLflow's schema migrations, seconds of CPU."""
    return local.tracking_store(tmp_path_factory.mktemp("mlflow"))


@pytest.mark.parametrize("example", ["churn", "boosting"])
def test_an_example_trains_from_azurite_and_logs_to_mlflow(
    tmp_path, venv, tracking, azurite: services.Azurite, example, monkeypatch
) -> None:
    from mlflow import MlflowClient

    container = f"t{uuid.uuid4().hex[:12]}"
    files = local.sample_csvs(1200, seed=5)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.get_container_client(container)
    client.create_container()
    for name, data in files.items():
        client.upload_blob(f"churn/{name}", data)
    client.upload_blob("churn/README.txt", b"not part of the fingerprint")
    service.close()

    snapshot = tmp_path / "snapshot"  # the example as a job sees it: its folder, nothing else
    shutil.copytree(ROOT / "examples" / example, snapshot, ignore=shutil.ignore_patterns("__pycache__"))
    tracking_uri, artifacts = tracking
    experiment = f"pkg-{example}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # for models:/ below
    MlflowClient(tracking_uri).create_experiment(experiment, artifact_location=f"{artifacts}/{example}")
    # Issue 24: churn runs where a GPU is visible (an nvidia-smi that lists one), boosting where
    # none is; both train on the CPU (scikit-learn) and record what they saw.
    gpu_bin = tmp_path / "gpu-bin"
    if example == "churn":
        services.write_shim(gpu_bin, "nvidia-smi", 'echo "GPU 0: Tesla V100-PCIE-16GB (UUID: GPU-1a)"\n')
    environment = {
        "PATH": f"{gpu_bin}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }
    done = subprocess.run(
        [
            venv / "bin" / "python",
            "train.py",
            "--data",
            f"hub://{container}/churn/",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--output-dir",
            str(tmp_path / "outputs"),
        ],
        cwd=snapshot,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert not (snapshot / "edge_train").exists()  # it came from the installed package

    # The fingerprint, computed here from the blobs themselves: names and SHA-256 of the CSVs.
    lines = sorted(f"churn/{name}\t{sha256(data)}" for name, data in files.items())
    assert summary["data_fingerprint"] == sha256("\n".join(lines).encode())

    mlflow = MlflowClient(tracking_uri)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert run.data.metrics["accuracy"] > 0.8
    assert run.data.tags["data_fingerprint"] == summary["data_fingerprint"]
    assert run.data.tags["hub_location"] == f"hub://{container}/churn/"
    assert run.data.tags["hub_blobs"] == "5"
    assert run.data.tags["example"] == example
    assert run.data.tags["edge.gpus"] == {"churn": "1", "boosting": "0"}[example]
    expected_params = {"churn": {"c", "max_iter", "seed"}, "boosting": {"learning_rate", "max_iter", "random_state"}}
    assert expected_params[example] <= set(run.data.params)
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id

    # The logged model and the one saved for registration predict alike on the data.
    import mlflow.pyfunc
    import pandas as pd

    rows = pd.read_csv(tmp_path / "cache" / "churn" / "part-000.csv").drop(columns=["label"]).head(20)
    from_tracking = mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(rows)
    from_outputs = mlflow.pyfunc.load_model(str(tmp_path / "outputs" / "model")).predict(rows)
    assert list(from_tracking) == list(from_outputs)
    assert (tmp_path / "outputs" / "model" / "MLmodel").is_file()
    assert (
        json.loads((tmp_path / "outputs" / "lineage.json").read_text())["data_fingerprint"]
        == summary["data_fingerprint"]
    )
