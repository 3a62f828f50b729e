"""The training data path against Azurite: staging, cache, atomicity, credentials, the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from examples.churn import estimator as model
from examples.churn import train
from tests.harness.http_proxy import Refusal, Wire
from training import emulator, local
from training.src.edge_train import credentials, staging


def config(tmp_path: Path, container: ContainerClient, prefix: str = "data/") -> train.TrainConfig:
    return train.TrainConfig(
        container=container.container_name,
        prefix=prefix,
        cache_dir=tmp_path / "cache",
        output_dir=tmp_path / "outputs",
        hyperparameters=model.Hyperparameters(seed=3),
    )


def service_of(wire: Wire) -> BlobServiceClient:
    """A client whose every request crosses the recording proxy in front of Azurite."""
    return BlobServiceClient.from_connection_string(emulator.connection_string(wire.proxy.port))


FAILURE_MID_DOWNLOAD: Refusal = (403, "AuthorizationFailure", "simulated failure mid-download")


def upload(container: ContainerClient, rows: int = 2000, seed: int = 3) -> None:
    for name, data in local.sample_csvs(rows, seed).items():
        container.upload_blob(f"data/{name}", data, overwrite=True)


def test_training_end_to_end_produces_a_sane_model(tmp_path, container, wire) -> None:
    upload(container)
    result = train.run(service_of(wire), config(tmp_path, container))
    assert result.metrics.rows == 2000 and result.metrics.features == 8
    assert result.metrics.accuracy > 0.8  # a learnable dataset: chance is 0.5
    assert 0.8 < result.metrics.roc_auc <= 1.0
    metrics = json.loads((tmp_path / "outputs/metrics.json").read_text())
    assert metrics["accuracy"] == result.metrics.accuracy
    lineage = json.loads((tmp_path / "outputs/lineage.json").read_text())
    assert lineage["data_fingerprint"] == result.fingerprint and lineage["blobs"] == 4
    import mlflow.sklearn

    loaded = mlflow.sklearn.load_model(str(result.model_dir))
    x, y, _ = model.load_csvs(sorted((tmp_path / "cache/data").glob("*.csv")))
    assert (loaded.predict(x) == y).mean() > 0.8


def test_a_second_run_downloads_nothing(tmp_path, container, wire) -> None:
    upload(container)
    first = train.run(service_of(wire), config(tmp_path, container))
    assert first.staging.downloaded == 4 and first.staging.bytes_downloaded > 0
    wire.clear()
    second = train.run(service_of(wire), config(tmp_path, container))
    assert (second.staging.downloaded, second.staging.reused, second.staging.bytes_downloaded) == (0, 4, 0)
    assert wire.gets == []  # not one blob read went over the wire
    assert second.fingerprint == first.fingerprint


def test_a_changed_blob_is_downloaded_again_and_changes_the_fingerprint(tmp_path, container, wire) -> None:
    upload(container)
    first = train.run(service_of(wire), config(tmp_path, container))
    container.upload_blob("data/part-001.csv", local.sample_csvs(2000, 99)["part-001.csv"], overwrite=True)
    second = train.run(service_of(wire), config(tmp_path, container))
    assert (second.staging.downloaded, second.staging.reused) == (1, 3)
    assert second.fingerprint != first.fingerprint


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and p.name.endswith(".partial"))


def test_an_interrupted_download_leaves_nothing_that_looks_complete(tmp_path, container, wire) -> None:
    for i in range(6):
        container.upload_blob(f"data/blob-{i}.bin", bytes([i]) * 50_000)
    wire.on_request = lambda method, path: (
        FAILURE_MID_DOWNLOAD if method == "GET" and path.endswith("blob-3.bin") else None
    )
    cache = tmp_path / "cache"
    with pytest.raises(staging.StagingError, match=r"'data/blob-3.bin'"):
        staging.stage_blobs(container, "data/", cache, workers=2)
    assert not (cache / "data/blob-3.bin").exists()
    assert leftovers(cache) == []
    manifest = json.loads((cache / staging.MANIFEST).read_text())
    assert "data/blob-3.bin" not in manifest
    for name in manifest:  # whatever the manifest vouches for is complete
        assert (cache / name).stat().st_size == 50_000

    wire.on_request = None
    again = staging.stage_blobs(container, "data/", cache, workers=2)
    assert again.downloaded == 6 - len(manifest)
    assert (cache / "data/blob-3.bin").read_bytes() == bytes([3]) * 50_000


def test_an_interrupted_large_parallel_download_leaves_no_file(tmp_path, container, wire, monkeypatch) -> None:
    monkeypatch.setattr(staging, "LARGE_BLOB_BYTES", 64 * 1024)  # make a 3 MiB blob "large"
    monkeypatch.setattr(staging, "RANGE_BYTES", 1024 * 1024)  # in three ranges
    container.upload_blob("data/big.bin", b"x" * (3 * 1024 * 1024))
    reads: list[str] = []

    def second_range_fails(method: str, path: str) -> Refusal | None:
        if not (method == "GET" and path.endswith("big.bin")):
            return None  # the listing, and the container's deletion afterwards, pass
        reads.append(path)
        return FAILURE_MID_DOWNLOAD if len(reads) == 2 else None

    wire.on_request = second_range_fails
    with pytest.raises(staging.StagingError, match=r"'data/big.bin'"):
        staging.stage_blobs(container, "data/", tmp_path / "cache")
    assert len(reads) >= 2, "the second range was never asked for: the test proved nothing"
    assert not (tmp_path / "cache/data/big.bin").exists()
    assert leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("name", ["data/../../escape.csv", "/etc/passwd", "data//a.csv", "data/./a.csv", ".."])
def test_blob_names_cannot_escape_the_cache(tmp_path, name) -> None:
    assert staging._local_path(tmp_path, "data/a.csv") == tmp_path / "data/a.csv"
    with pytest.raises(staging.StagingError, match="outside"):
        staging._local_path(tmp_path, name)


def test_an_empty_prefix_is_a_clear_error(tmp_path, container) -> None:
    with pytest.raises(staging.StagingError, match="no blobs under"):
        staging.stage_blobs(container, "nothing-here/", tmp_path / "cache")


# --- credentials ----------------------------------------------------------------------------------


CONNECTION = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;"


def test_credential_order_environment_then_file(tmp_path) -> None:
    file = tmp_path / "storage-credential"
    file.write_text("sv=2024-01-01&sig=abc\n")
    assert (
        credentials.resolve(str(file), {"AZURE_STORAGE_CONNECTION_STRING": CONNECTION}).connection_string == CONNECTION
    )
    sas = credentials.resolve(str(file), {"AZURE_STORAGE_SAS_TOKEN": "?sv=1&sig=env"})
    assert sas.sas_token == "sv=1&sig=env" and sas.source == "$AZURE_STORAGE_SAS_TOKEN"
    from_file = credentials.resolve(str(file), {})
    assert from_file.sas_token == "sv=2024-01-01&sig=abc" and from_file.source == str(file)
    assert "sig=" not in repr(from_file)


def test_no_credential_names_everything_tried(tmp_path) -> None:
    with pytest.raises(credentials.CredentialNotFound) as caught:
        credentials.resolve(str(tmp_path / "missing"), {})
    for tried in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", str(tmp_path / "missing")):
        assert tried in str(caught.value)


def test_a_file_with_something_else_is_refused(tmp_path) -> None:
    (tmp_path / "c").write_text("hunter2")
    with pytest.raises(credentials.CredentialNotFound, match="neither a connection string nor a SAS token"):
        credentials.resolve(str(tmp_path / "c"), {})


def test_the_entrypoint_fails_clearly_without_a_credential(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN", raising=False)
    status = train.main(
        ["--data", "hub://ccc/", "--credential-file", str(tmp_path / "none"), "--output-dir", str(tmp_path)]
    )
    assert status == 2
    assert "no storage credential" in caplog.text


def test_the_entrypoint_runs_as_a_script_the_way_a_job_runs_it(tmp_path, container, azurite) -> None:
    upload(container)
    script = Path(train.__file__)
    # edge_train importable as if installed (training/src/pyproject.toml), nothing else of the repository.
    env = {
        "PATH": "/usr/bin:/bin",
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "PYTHONPATH": str(local.PACKAGE_ROOT),
    }
    out = subprocess.run(
        [
            sys.executable,
            script.name,
            "--data",
            f"hub://{container.container_name}/data/",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["metrics"]["accuracy"] > 0.8


# --- the local demo's sample (the demo itself: tests/test_local_demo.py) ---------------------------


def writes(wire: Wire) -> list[str]:
    return [r.path.split("?")[0].rsplit("/", 1)[-1] for r in wire.proxy.recorded() if r.method == "PUT"]


def sample_etags(container: ContainerClient) -> dict[str, str]:
    return {b.name: b.etag for b in container.list_blobs(name_starts_with="demo/")}


def test_a_sample_already_in_storage_is_neither_generated_nor_written(container, wire, monkeypatch) -> None:
    service = service_of(wire)
    assert local.upload_sample(service, container.container_name, "demo/", 1000, 7) == 4
    before = sample_etags(container)
    wire.clear()

    def no_generating(*_: object) -> dict[str, bytes]:
        raise AssertionError("generated the sample again")  # it imports scikit-learn in the demo's process

    monkeypatch.setattr(local, "sample_csvs", no_generating)
    assert local.upload_sample(service, container.container_name, "demo/", 1000, 7) == 0
    assert writes(wire) == []
    assert sample_etags(container) == before  # so the trainer's staging reuses its cache


def foreign_bytes(container: ContainerClient) -> None:
    container.upload_blob("demo/part-001.csv", b"f0,label\n1,0\n", overwrite=True)


def foreign_bytes_with_our_metadata(container: ContainerClient) -> None:
    metadata = container.get_blob_client("demo/part-001.csv").get_blob_properties().metadata
    container.upload_blob("demo/part-001.csv", b"f0,label\n1,0\n", overwrite=True, metadata=metadata)


def deleted(container: ContainerClient) -> None:
    container.delete_blob("demo/part-001.csv")


@pytest.mark.parametrize("change", [foreign_bytes, foreign_bytes_with_our_metadata, deleted])
def test_a_changed_sample_blob_is_written_again_and_only_it(container, wire, change) -> None:
    service = service_of(wire)
    local.upload_sample(service, container.container_name, "demo/", 1000, 7)
    change(container)
    before = sample_etags(container)
    wire.clear()
    assert local.upload_sample(service, container.container_name, "demo/", 1000, 7) == 1
    assert writes(wire) == ["part-001.csv"]
    expected = local.sample_csvs(1000, 7)["part-001.csv"]
    assert container.download_blob("demo/part-001.csv").readall() == expected
    after = sample_etags(container)
    assert {n: e for n, e in after.items() if n != "demo/part-001.csv"} == {
        n: e for n, e in before.items() if n != "demo/part-001.csv"
    }


def test_other_sample_arguments_write_every_part(container, wire) -> None:
    service = service_of(wire)
    local.upload_sample(service, container.container_name, "demo/", 1000, 7)
    assert local.upload_sample(service, container.container_name, "demo/", 1000, 8) == 4
    assert container.download_blob("demo/part-000.csv").readall() == local.sample_csvs(1000, 8)["part-000.csv"]
