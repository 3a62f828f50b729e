"""`python -m training run --local`: the whole training flow on this machine, no Azure needed.

Starts the storage emulator (or uses the storage named by $AZURE_STORAGE_CONNECTION_STRING or
--connection-string-file), writes a seeded sample dataset into it as CSV blobs (those missing or
changed: each carries metadata saying what it holds, so one listing tells), then runs an
example trainer (examples/<name>/train.py) the way a job runs it: as a script, the connection
string in its environment (never on a command line, where `ps` shows it), edge_train importable
as if installed, MLflow logging to a local tracking store in <workdir>/mlflow. Run it twice to
see the cache: the second run downloads nothing. `mlflow ui --backend-store-uri <tracking uri>`
shows the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from training.src.edge_train.location import HubLocation, LocationError, check_container

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PACKAGE_ROOT = Path(__file__).resolve().parent / "src"
DEFAULT_WORKDIR = Path(".edge-training/demo")
CONNECTION_STRING_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"
LABEL = "label"
EXPERIMENT = "edge-training-local"
TRAINER_TIMEOUT_SECONDS = 1800
# --rows: enough for a split with both classes in it, few enough for a laptop.
MIN_ROWS, MAX_ROWS = 100, 10_000_000


class LocalRunError(RuntimeError):
    """Bad input to run --local, or a trainer that failed."""


SAMPLE_PARTS = 4
SAMPLE_FEATURES = 8
# Bump when sample_csvs writes different bytes for the same arguments: blobs written before then
# no longer match and are replaced.
SAMPLE_FORMAT = 1


def sample_csvs(rows: int, seed: int, parts: int = SAMPLE_PARTS, features: int = SAMPLE_FEATURES) -> dict[str, bytes]:
    """A learnable binary classification table, split into `parts` CSV files."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=features, n_informative=5, class_sep=1.5, random_state=seed)
    header = [f"f{i}" for i in range(features)] + [LABEL]
    files: dict[str, bytes] = {}
    for part in range(parts):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for i in range(part, rows, parts):
            writer.writerow([f"{v:.6f}" for v in x[i]] + [int(y[i])])
        files[f"part-{part:03d}.csv"] = buffer.getvalue().encode()
    return files


def sample_names() -> list[str]:
    return [f"part-{part:03d}.csv" for part in range(SAMPLE_PARTS)]


def sample_key(rows: int, seed: int) -> str:
    """Everything the sample's bytes depend on: its arguments and the generator's version."""
    from importlib.metadata import version

    generator = f"scikit-learn {version('scikit-learn')}, format {SAMPLE_FORMAT}"
    return f"rows {rows}, seed {seed}, {SAMPLE_PARTS} parts, {SAMPLE_FEATURES} features, {generator}"


def _is_sample(blob: Any | None, key: str) -> bool:
    """Written by upload_sample for this key, and its bytes unchanged since: any write of new
    content replaces a blob's metadata and Content-MD5, so a stranger's blob fails one test."""
    if blob is None:
        return False
    metadata = blob.metadata or {}
    md5 = blob.content_settings.content_md5 if blob.content_settings else None
    return metadata.get("sample") == key and md5 is not None and bytes(md5).hex() == metadata.get("sample_md5")


def upload_sample(service: Any, container: str, prefix: str, rows: int, seed: int) -> int:
    """The seeded sample as CSV blobs under `prefix`; the number of blobs written.

    Unchanged blobs keep their ETag, so a second run shows the staging cache at work. One listing
    decides: when every part is there as written for these arguments, nothing is generated (that
    would import scikit-learn in this process) and nothing is written."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
    from azure.storage.blob import ContentSettings

    client = service.get_container_client(container)
    key = sample_key(rows, seed)
    try:
        listed = {b.name: b for b in client.list_blobs(name_starts_with=prefix, include=["metadata"])}
    except ResourceNotFoundError:  # no container yet
        with contextlib.suppress(ResourceExistsError):
            client.create_container()
        listed = {}
    stale = [name for name in sample_names() if not _is_sample(listed.get(f"{prefix}{name}"), key)]
    if not stale:
        return 0
    files = sample_csvs(rows, seed)
    for name in stale:
        md5 = hashlib.md5(files[name], usedforsecurity=False).digest()
        client.upload_blob(
            f"{prefix}{name}",
            files[name],
            overwrite=True,
            metadata={"sample": key, "sample_md5": md5.hex()},
            # Stated, not left to the service: Put Block List (large parts) would store none.
            content_settings=ContentSettings(content_type="text/csv", content_md5=md5),
        )
    return len(stale)


def _rows(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not MIN_ROWS <= value <= MAX_ROWS:
        raise argparse.ArgumentTypeError(
            f"{value} is outside {MIN_ROWS}..{MAX_ROWS} (a split needs rows in both classes)"
        )
    return value


def _container(text: str) -> str:
    try:
        return check_container(text)
    except LocationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def examples() -> list[str]:
    return sorted(p.parent.name for p in EXAMPLES.glob("*/train.py"))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true", required=True, help="run here against the storage emulator")
    parser.add_argument(
        "--connection-string-file",
        type=Path,
        help=f"a file holding the connection string of other storage (or set ${CONNECTION_STRING_VARIABLE})",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="emulator data, cache, outputs, MLflow")
    parser.add_argument("--container", type=_container, default="training-data")
    parser.add_argument("--prefix", default="demo/", help="a folder in the container (no '..', no leading '/')")
    parser.add_argument("--rows", type=_rows, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--example", default="churn", help=f"the trainer to run: {', '.join(examples())}")


def connection_string(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> str | None:
    """From --connection-string-file, else the environment, else None (start the emulator)."""
    if args.connection_string_file is not None:
        try:
            text = args.connection_string_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise LocalRunError(f"--connection-string-file {args.connection_string_file}: {error}") from None
        source = f"--connection-string-file {args.connection_string_file}"
    elif environ.get(CONNECTION_STRING_VARIABLE):
        text, source = environ[CONNECTION_STRING_VARIABLE].strip(), f"${CONNECTION_STRING_VARIABLE}"
    else:
        return None
    from azure.storage.blob import BlobServiceClient

    try:  # parsed here so a typo fails before anything starts; never echoed, it holds a key
        BlobServiceClient.from_connection_string(text).close()
    except ValueError:
        raise LocalRunError(f"{source} does not hold a storage connection string") from None
    return text


def tracking_database(workdir: Path) -> Path:
    return (workdir / "mlflow" / "mlflow.db").resolve()


def tracking_store(workdir: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) under the workdir. SQLite: MLflow 3 refuses its file
    store unless told otherwise (mlflow/store/tracking/file_store.py), and `mlflow ui` reads it."""
    database = tracking_database(workdir)
    database.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{database}", (database.parent / "artifacts").as_uri()


def _experiment_exists(database: Path, name: str) -> bool:
    """Read-only, in MLflow's own table (`experiments`, by name, as get_experiment_by_name finds
    it); False when in doubt (no database yet, another schema), and MLflow then decides."""
    try:
        with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return False


def _experiment(workdir: Path) -> None:
    """Created with its artifacts beside the database (by default they would land in ./mlruns).
    Looked up first without MLflow: a warm run then spends none of the 1.5 s that importing
    MLflow and opening its store take in this process (the trainer imports MLflow anyway)."""
    if _experiment_exists(tracking_database(workdir), EXPERIMENT):
        return
    from mlflow import MlflowClient

    tracking_uri, artifacts = tracking_store(workdir)
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifacts)


def run_trainer(
    example: str, location: HubLocation, workdir: Path, connection: str, seed: int, tracking_uri: str
) -> dict[str, Any]:
    """The example's train.py as a job runs it; its summary (the last line it prints)."""
    script = EXAMPLES / example / "train.py"
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AZURE_STORAGE_SAS_TOKEN")},
        CONNECTION_STRING_VARIABLE: connection,
        "PYTHONPATH": str(PACKAGE_ROOT),  # edge_train as if installed (training/src/pyproject.toml)
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
    }
    argv = [
        sys.executable,
        str(script),
        "--data",
        location.uri,
        "--cache-dir",
        str((workdir / "cache").resolve()),
        "--output-dir",
        str((workdir / "outputs" / example).resolve()),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(
        argv,
        cwd=workdir,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
        timeout=TRAINER_TIMEOUT_SECONDS,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise LocalRunError(f"examples/{example}/train.py ended with exit code {done.returncode} (its log is above)")
    return json.loads(lines[-1])


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    if args.example not in examples():
        raise LocalRunError(f"--example {args.example!r} is not one of {', '.join(examples())}")
    try:
        location = HubLocation(args.container, args.prefix)
    except LocationError as error:
        raise LocalRunError(f"--prefix: {error}") from None
    connection = connection_string(args, os.environ)
    args.workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        emulator = None
        if connection is None:
            from training.emulator import Azurite

            # Node starts (about a second) while this process does the work below.
            emulator = stack.enter_context(Azurite(args.workdir / "azurite"))
        tracking_uri, _ = tracking_store(args.workdir)
        _experiment(args.workdir)
        from azure.storage.blob import BlobServiceClient

        from training.src.edge_train.credentials import API_VERSION_VARIABLE, HUB_BLOB_API_VERSION

        if emulator is not None:
            connection = emulator.connection_string  # once it listens
            log.info("storage emulator on 127.0.0.1:%d", emulator.port)
        # Closed before the emulator stops: Azurite's graceful stop waits for open connections.
        # At the Hub's blob API version, like the job: the demo then shows what a Hub would take.
        version = os.environ.get(API_VERSION_VARIABLE) or HUB_BLOB_API_VERSION
        with BlobServiceClient.from_connection_string(connection, api_version=version) as service:
            written = upload_sample(service, location.container, location.prefix, args.rows, args.seed)
        log.info("sample data in %s: %d of %d blobs written", location, written, SAMPLE_PARTS)
        summary = run_trainer(args.example, location, args.workdir, connection, args.seed, tracking_uri)
    print(json.dumps({**summary, "tracking_uri": tracking_uri, "experiment": EXPERIMENT}, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    configure_parser(parser)
    raise SystemExit(run(parser.parse_args(["--local", *sys.argv[1:]])))
