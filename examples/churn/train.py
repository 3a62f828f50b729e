"""Churn example: a logistic regression on the Hub's CSV files, tracked with MLflow.

    python train.py --data hub://training-data/churn/ --c 0.5 --output-dir outputs

The same command runs on a laptop, on the edge VM and inside an Azure ML job. The data is read
in place with edge_train (staged to a local cache, never uploaded); the storage credential comes
from the machine (see edge_train/credentials.py). With $MLFLOW_TRACKING_URI set (Azure ML sets it
in every job; `python -m training run --local` points it at .edge-training/), the parameters,
metrics, data fingerprint and the model are logged to MLflow. Either way the model is saved in
MLflow format to <output-dir>/model/, which `python -m training register` registers.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

try:
    import edge_train  # installed, or in the job's code snapshot
except ModuleNotFoundError:  # a checkout of this repository (the test suite)
    from training.src import edge_train

if __package__ in (None, ""):  # run as a script from this folder, as Azure ML does
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import estimator
else:
    from . import estimator

log = logging.getLogger("churn")
TRACKING_VARIABLE = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class TrainConfig:
    container: str
    prefix: str
    cache_dir: Path | None
    """None: edge_train's default, one cache per account and container."""
    output_dir: Path
    hyperparameters: estimator.Hyperparameters
    workers: int = 16
    account_url: str | None = None
    credential_file: str | None = None
    track: bool = False
    """Log to MLflow (the tracking URI and experiment come from MLflow's own variables)."""


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    """The MLflow model folder (MLmodel, model.skops, requirements.txt)."""
    metrics: estimator.Metrics
    fingerprint: str
    staging: edge_train.Staged
    run_id: str | None = None


def _is_csv(name: str) -> bool:
    return name.endswith(".csv")


def run(service: Any, config: TrainConfig) -> TrainResult:
    """`service` is a BlobServiceClient, or None to find the account and credential on the machine."""
    location = edge_train.HubLocation(config.container, config.prefix)
    staged = edge_train.stage(
        location,
        config.cache_dir,
        service=service,
        account_url=config.account_url,
        credential_file=config.credential_file,
        workers=config.workers,
    )
    csvs = staged.paths_ending(".csv")
    if not csvs:
        raise estimator.DataError(f"no .csv blobs under {location}")
    fingerprint = edge_train.fingerprint(staged, include=_is_csv)
    x, y, _ = estimator.load_csvs(csvs)
    trained, metrics = estimator.train(x, y, config.hyperparameters)

    config.output_dir.mkdir(parents=True, exist_ok=True)
    model_dir = config.output_dir / "model"
    _save_mlflow_model(trained, model_dir, x)
    (config.output_dir / "metrics.json").write_text(json.dumps(metrics.as_dict(), indent=2))
    lineage = {
        "data_fingerprint": fingerprint,
        "container": location.container,
        "prefix": location.prefix,
        "blobs": len(staged.blobs),
        "hyperparameters": asdict(config.hyperparameters),
    }
    (config.output_dir / "lineage.json").write_text(json.dumps(lineage, indent=2))
    # Where the data is: does the model hold any training row verbatim? Counts only leave.
    edge_train.model_rows.check(trained, model_dir, x, config.output_dir)
    # scikit-learn trains on the CPU; on a GPU instance type the run still records what it saw.
    gpus = edge_train.accelerators.visible_gpus()
    run_id = _track(trained, metrics, config, staged, fingerprint, x, len(gpus)) if config.track else None
    log.info(
        "trained on %d rows: accuracy %.3f, AUC %.3f; data %s; GPUs visible: %s",
        metrics.rows,
        metrics.accuracy,
        metrics.roc_auc,
        fingerprint[:12],
        ", ".join(gpus) or "none",
    )
    return TrainResult(model_dir, metrics, fingerprint, staged, run_id)


def requirements() -> list[str]:
    """What serving the model needs, stated: MLflow would otherwise infer it by loading the model
    in a child process, which costs seconds per save."""
    import mlflow
    import sklearn
    import skops

    # skops: the format mlflow.sklearn saves in (and the only one it loads without pickle).
    return [
        f"mlflow-skinny=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"skops=={skops.__version__}",
    ]


def _save_mlflow_model(trained: Any, model_dir: Path, x: Any) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    if model_dir.exists():  # save_model refuses an existing folder; this one is ours to replace
        import shutil

        shutil.rmtree(model_dir)
    mlflow.sklearn.save_model(
        trained,
        model_dir,
        signature=infer_signature(x[:5], trained.predict(x[:5])),
        pip_requirements=requirements(),
    )


def _track(
    trained: Any,
    metrics: estimator.Metrics,
    config: TrainConfig,
    staged: edge_train.Staged,
    fingerprint: str,
    x: Any,
    gpus: int = 0,
) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    # In an Azure ML job the run already exists ($MLFLOW_RUN_ID); start_run attaches to it.
    with mlflow.start_run() as active:
        mlflow.log_params(asdict(config.hyperparameters))
        mlflow.log_metrics({k: float(v) for k, v in metrics.as_dict().items()})
        mlflow.set_tags({**edge_train.lineage_tags(staged, fingerprint), "example": "churn", "edge.gpus": str(gpus)})
        mlflow.sklearn.log_model(
            trained,
            name="model",
            signature=infer_signature(x[:5], trained.predict(x[:5])),
            pip_requirements=requirements(),
        )
        return active.info.run_id


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """Bad arguments as one line naming them (argparse prints its whole usage first otherwise)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="hub://<container>/<prefix> of the CSV files")
    p.add_argument("--account-url", help="Hub blob endpoint (default: $EDGE_ACCOUNT_URL)")
    p.add_argument("--credential-file", default=None, help="default: /etc/edge-training/storage-credential")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="default: /tmp/edge-training-cache/<account>/<container>"
    )
    p.add_argument("--output-dir", type=Path, default=Path("outputs"))
    p.add_argument("--workers", type=positive_int, default=16)
    p.add_argument("--c", type=float, default=1.0, help="inverse regularization strength")
    p.add_argument("--max-iter", type=positive_int, default=500)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    args = parser().parse_args(argv)
    try:
        location = edge_train.HubLocation.parse(args.data)
        result = run(
            None,
            TrainConfig(
                container=location.container,
                prefix=location.prefix,
                cache_dir=args.cache_dir,
                output_dir=args.output_dir,
                hyperparameters=estimator.Hyperparameters(c=args.c, max_iter=args.max_iter, seed=args.seed),
                workers=args.workers,
                account_url=args.account_url,
                credential_file=args.credential_file,
                track=bool(os.environ.get(TRACKING_VARIABLE)),
            ),
        )
    except (
        edge_train.LocationError,
        edge_train.CredentialNotFound,
        edge_train.StagingError,
        estimator.DataError,
    ) as error:
        log.error("%s", error)
        return 2
    summary = {
        "metrics": result.metrics.as_dict(),
        "data_fingerprint": result.fingerprint,
        "model": str(result.model_dir),
        "downloaded_blobs": result.staging.downloaded,
        "reused_blobs": result.staging.reused,
        "bytes_downloaded": result.staging.bytes_downloaded,
        "mlflow_run_id": result.run_id,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    code = main()
    # The interpreter's last collection would walk every object that MLflow and scikit-learn made (about
    # 1 s of a 4 s run here); frozen, it skips them. Files and the MLflow run are closed by now.
    gc.freeze()
    sys.exit(code)
