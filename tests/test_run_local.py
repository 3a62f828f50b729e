"""`python -m training run --local` against the suite's Azurite: a local MLflow store, and the
storage secret kept off every command line.

Apart from tests/test_edge_train_package.py so that this run and the examples' (each a trainer
process importing MLflow and scikit-learn) run on different xdist workers at the same time."""

from __future__ import annotations

import json
import re
import subprocess
import uuid

from training import cli, local


def test_run_local_logs_to_a_local_store_and_keeps_the_secret_off_command_lines(
    tmp_path, azurite, monkeypatch, capsys
) -> None:
    from mlflow import MlflowClient

    started: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def recording_run(argv, *args, **kwargs):
        started.append(([str(a) for a in argv], dict(kwargs.get("env") or {})))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(local.subprocess, "run", recording_run)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    container = f"t{uuid.uuid4().hex[:12]}"
    argv = ["run", "--local", "--workdir", str(tmp_path / "demo"), "--rows", "600", "--container", container]
    assert cli.main(argv) == cli.OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["tracking_uri"] == f"sqlite:///{(tmp_path / 'demo' / 'mlflow' / 'mlflow.db').resolve()}"
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["mlflow_run_id"])
    assert run.data.tags["data_fingerprint"] == summary["data_fingerprint"]
    assert run.data.metrics["rows"] == 600

    (trainer_argv, trainer_env) = started[-1]
    key = re.search(r"AccountKey=([^;]+)", azurite.connection_string).group(1)
    assert all(key not in a for a in trainer_argv)
    assert trainer_env["AZURE_STORAGE_CONNECTION_STRING"] == azurite.connection_string
    assert trainer_argv[2:4] == ["--data", f"hub://{container}/demo/"]
    # What the docs tell readers to serve or package after the demo is what the demo made.
    from tests.test_docs import documented_demo_paths

    for path in documented_demo_paths():
        assert (tmp_path / "demo" / path).exists(), f"the docs name .edge-training/demo/{path}; the demo made no such"
