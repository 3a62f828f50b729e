"""The local demo (`python -m training run --local`) end to end, and the emulator it starts.

Apart from tests/test_training_data.py so that the demo's two runs (each with its own Azurite and
trainer process) and the trainer end to end run on different xdist workers at the same time."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from azure.storage.blob import BlobServiceClient

from training import emulator, local


def test_the_local_demo_runs_twice_with_its_own_emulator_and_leaves_nothing_running(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    local.configure_parser(parser)
    args = parser.parse_args(["--local", "--workdir", str(tmp_path / "demo"), "--rows", "1000"])
    assert local.run(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert local.run(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["downloaded_blobs"] == 4 and first["metrics"]["accuracy"] > 0.8
    assert second["downloaded_blobs"] == 0 and second["bytes_downloaded"] == 0
    assert second["data_fingerprint"] == first["data_fingerprint"]
    running = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert running.stdout == "", f"left running: {running.stdout}"


def test_a_warm_run_finds_its_experiment_without_importing_mlflow(tmp_path) -> None:
    workdir = tmp_path / "demo"
    assert not local._experiment_exists(local.tracking_database(workdir), local.EXPERIMENT)
    assert not local.tracking_database(workdir).exists()  # looking created nothing
    local._experiment(workdir)  # cold: MLflow creates the store and the experiment
    assert local._experiment_exists(local.tracking_database(workdir), local.EXPERIMENT)
    assert not local._experiment_exists(local.tracking_database(workdir), "another")
    probe = (
        "import sys; from pathlib import Path; from training import local; "
        f"local._experiment(Path({str(workdir)!r})); print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=local.ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_emulator_stops_with_a_client_connected_and_keeps_its_data(tmp_path) -> None:
    """Azurite's graceful stop waits on keep-alive connections forever; ours waits only for its
    metadata to be saved (the "closed" line), then ends the group."""
    with emulator.Azurite(tmp_path / "az") as first:
        service = BlobServiceClient.from_connection_string(first.connection_string)
        service.create_container("kept").upload_blob("a", b"saved")  # leaves a keep-alive connection open
        pid = first.process.pid
    assert first.process.returncode is not None
    running = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
    assert running.stdout == ""
    with emulator.Azurite(tmp_path / "az") as second:
        again = BlobServiceClient.from_connection_string(second.connection_string)
        assert again.get_blob_client("kept", "a").download_blob().readall() == b"saved"


def test_the_emulator_stopped_while_it_starts_ends_without_waiting_or_warning(tmp_path, caplog) -> None:
    """Started, then stopped before anything asked for its port (the demo failing early): Node has
    no signal handler yet and ends at once, which is not a missed "closed" line."""
    with emulator.Azurite(tmp_path / "az") as early:
        pid = early.process.pid
    assert early.process.returncode is not None
    assert "did not report closing" not in caplog.text
    running = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
    assert running.stdout == ""
