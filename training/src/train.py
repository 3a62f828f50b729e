"""Training entrypoint: stage the data from Hub blob storage, train, write model and metrics.

    python train.py --account-url https://<account>.blob.<hub-fqdn> --container training-data \
        --prefix churn/ --output-dir outputs

The same command runs on a laptop, on the edge VM and inside an Azure ML job (whose command
line carries only these locations). The storage credential comes from the machine: see
edge_train/credentials.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import joblib
from azure.storage.blob import BlobServiceClient

if __package__ in (None, ""):  # run as a script from this folder, as Azure ML does
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edge_train import credentials, model, staging
else:
    from .edge_train import credentials, model, staging

log = logging.getLogger("edge_train")


@dataclass(frozen=True)
class TrainConfig:
    container: str
    prefix: str
    cache_dir: Path
    output_dir: Path
    hyperparameters: model.Hyperparameters
    workers: int = 16


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    metrics: model.Metrics
    fingerprint: str
    staging: staging.StageResult


def run(service: BlobServiceClient, config: TrainConfig) -> TrainResult:
    container = service.get_container_client(config.container)
    staged = staging.stage_blobs(container, config.prefix, config.cache_dir, workers=config.workers)
    csvs = [b.path for b in staged.blobs if b.name.endswith(".csv")]
    if not csvs:
        raise model.DataError(f"no .csv blobs under {config.container}/{config.prefix}")
    fingerprint = staging.data_fingerprint(b for b in staged.blobs if b.name.endswith(".csv"))
    x, y, features = model.load_csvs(csvs)
    trained, metrics = model.train(x, y, config.hyperparameters)

    config.output_dir.mkdir(parents=True, exist_ok=True)
    model_dir = config.output_dir / "model"
    model_dir.mkdir(exist_ok=True)
    model_path = model_dir / "model.joblib"
    joblib.dump(trained, model_path)
    (model_dir / "features.json").write_text(json.dumps(features))
    (config.output_dir / "metrics.json").write_text(json.dumps(metrics.as_dict(), indent=2))
    lineage = {
        "data_fingerprint": fingerprint,
        "container": config.container,
        "prefix": config.prefix,
        "blobs": len(staged.blobs),
        "hyperparameters": asdict(config.hyperparameters),
    }
    (config.output_dir / "lineage.json").write_text(json.dumps(lineage, indent=2))
    log.info(
        "trained on %d rows: accuracy %.3f, AUC %.3f; data %s",
        metrics.rows,
        metrics.accuracy,
        metrics.roc_auc,
        fingerprint[:12],
    )
    return TrainResult(model_path, metrics, fingerprint, staged)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--account-url", help="blob endpoint of the Hub storage account (optional with a connection string)")
    p.add_argument("--container", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--credential-file", default=credentials.DEFAULT_CREDENTIAL_FILE)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/edge-training-cache"))  # noqa: S108
    p.add_argument("--output-dir", type=Path, default=Path("outputs"))
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--c", type=float, default=1.0, help="inverse regularization strength")
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    args = parser().parse_args(argv)
    try:
        credential = credentials.resolve(args.credential_file)
        log.info("storage credential from %s", credential.source)
        result = run(
            credential.service_client(args.account_url),
            TrainConfig(
                container=args.container,
                prefix=args.prefix,
                cache_dir=args.cache_dir,
                output_dir=args.output_dir,
                hyperparameters=model.Hyperparameters(c=args.c, max_iter=args.max_iter, seed=args.seed),
                workers=args.workers,
            ),
        )
    except (credentials.CredentialNotFound, staging.StagingError, model.DataError) as error:
        log.error("%s", error)
        return 2
    print(json.dumps({"metrics": result.metrics.as_dict(), "data_fingerprint": result.fingerprint}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
