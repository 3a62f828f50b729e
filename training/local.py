"""`python -m training run --local`: the whole training flow on this machine, no Azure needed.

Starts the storage emulator (or uses --connection-string), writes a seeded sample dataset into
it as CSV blobs, then runs the real training entrypoint against it: staging, fingerprint,
model, metrics. Run it twice to see the cache: the second run downloads nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import sys
from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from sklearn.datasets import make_classification

from training.emulator import Azurite
from training.src import train
from training.src.edge_train import model

log = logging.getLogger(__name__)
DEFAULT_WORKDIR = Path(".edge-training/demo")


def sample_csvs(rows: int, seed: int, parts: int = 4, features: int = 8) -> dict[str, bytes]:
    """A learnable binary classification table, split into `parts` CSV files."""
    x, y = make_classification(n_samples=rows, n_features=features, n_informative=5, class_sep=1.5, random_state=seed)
    header = [f"f{i}" for i in range(features)] + [model.LABEL]
    files: dict[str, bytes] = {}
    for part in range(parts):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for i in range(part, rows, parts):
            writer.writerow([f"{v:.6f}" for v in x[i]] + [int(y[i])])
        files[f"part-{part:03d}.csv"] = buffer.getvalue().encode()
    return files


def upload_sample(service: BlobServiceClient, container: str, prefix: str, rows: int, seed: int) -> int:
    client = service.get_container_client(container)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    files = sample_csvs(rows, seed)
    for name, data in files.items():
        blob = client.get_blob_client(f"{prefix}{name}")
        try:
            current = blob.get_blob_properties().content_settings.content_md5
        except ResourceNotFoundError:
            current = None
        # Unchanged data keeps its ETag, so a second run shows the staging cache at work.
        if current is None or bytes(current) != hashlib.md5(data, usedforsecurity=False).digest():
            blob.upload_blob(data, overwrite=True)
    return len(files)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true", required=True, help="run here against the storage emulator")
    parser.add_argument("--connection-string", help="use this storage instead of starting the emulator")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="emulator data, cache and outputs")
    parser.add_argument("--container", default="training-data")
    parser.add_argument("--prefix", default="demo/")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)


def _train(service: BlobServiceClient, args: argparse.Namespace) -> train.TrainResult:
    blobs = upload_sample(service, args.container, args.prefix, args.rows, args.seed)
    log.info("uploaded %d sample blobs to %s/%s", blobs, args.container, args.prefix)
    return train.run(
        service,
        train.TrainConfig(
            container=args.container,
            prefix=args.prefix,
            cache_dir=args.workdir / "cache",
            output_dir=args.workdir / "outputs",
            hyperparameters=model.Hyperparameters(seed=args.seed),
        ),
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    if args.connection_string:
        with BlobServiceClient.from_connection_string(args.connection_string) as service:
            result = _train(service, args)
    else:
        with Azurite(args.workdir / "azurite") as emulator:
            log.info("storage emulator on 127.0.0.1:%d", emulator.port)
            # Closed before the emulator stops: Azurite's graceful stop waits for open connections.
            with BlobServiceClient.from_connection_string(emulator.connection_string) as service:
                result = _train(service, args)
    print(
        json.dumps(
            {
                "model": str(result.model_path),
                "metrics": result.metrics.as_dict(),
                "data_fingerprint": result.fingerprint,
                "downloaded_blobs": result.staging.downloaded,
                "reused_blobs": result.staging.reused,
                "bytes_downloaded": result.staging.bytes_downloaded,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    configure_parser(parser)
    raise SystemExit(run(parser.parse_args(["--local", *sys.argv[1:]])))
