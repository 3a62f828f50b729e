"""Boosting example: gradient-boosted trees on the same Hub CSV files, with pandas and MLflow.

    python train.py --data hub://training-data/churn/ --learning-rate 0.1 --max-iter 100

A different kind of trainer than examples/churn (a DataFrame, trees, no scaling), reading the
Hub data the same way: edge_train.stage() returns local files, the rest is ordinary code.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

try:
    import edge_train  # installed, or in the job's code snapshot
except ModuleNotFoundError:  # a checkout of this repository (the test suite)
    from training.src import edge_train

log = logging.getLogger("boosting")
LABEL = "label"
# skops (MLflow's safe format for scikit-learn) asks which types to trust on load; this one is
# ours, written by this script.
TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def requirements() -> list[str]:
    """Stated, so that MLflow does not infer them by loading the model in a child process."""
    import sklearn
    import skops

    return [
        f"mlflow-skinny=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"skops=={skops.__version__}",  # the format mlflow.sklearn saves in
    ]


def load(paths: tuple[Path, ...]) -> pd.DataFrame:
    if not paths:
        raise ValueError("no .csv files were staged")
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    if LABEL not in frame.columns:
        raise ValueError(f"no {LABEL!r} column in {list(frame.columns)}")
    return frame


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="hub://<container>/<prefix> of the CSV files")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--output-dir", type=Path, default=Path("outputs"))
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        staged = edge_train.stage(args.data, args.cache_dir)
        frame = load(staged.paths_ending(".csv"))
    except (edge_train.LocationError, edge_train.CredentialNotFound, edge_train.StagingError, ValueError) as error:
        log.error("%s", error)
        return 2
    x, y = frame.drop(columns=[LABEL]), frame[LABEL].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=args.seed, stratify=y)
    params = {"learning_rate": args.learning_rate, "max_iter": args.max_iter, "random_state": args.seed}
    model = HistGradientBoostingClassifier(**params).fit(x_train, y_train)
    metrics = {
        "accuracy": float(accuracy_score(y_test, model.predict(x_test))),
        "roc_auc": float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])),
        "rows": float(len(frame)),
    }
    signature = infer_signature(x_test.head(), model.predict(x_test.head()))
    fingerprint = edge_train.fingerprint(staged, include=lambda name: name.endswith(".csv"))
    model_dir = args.output_dir / "model"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if model_dir.exists():  # save_model refuses an existing folder; this one is ours to replace
        shutil.rmtree(model_dir)
    saving = {"signature": signature, "pip_requirements": requirements(), "skops_trusted_types": TRUSTED}
    mlflow.sklearn.save_model(model, model_dir, **saving)
    lineage = {"data_fingerprint": fingerprint, "hub_location": staged.location.uri, "hyperparameters": params}
    (args.output_dir / "lineage.json").write_text(json.dumps(lineage, indent=2))
    # Where the data is: does the model hold any training row verbatim? Counts only leave.
    edge_train.model_rows.check(model, model_dir, x.to_numpy(dtype=float), args.output_dir)
    run_id = None
    if os.environ.get("MLFLOW_TRACKING_URI"):  # Azure ML sets it in jobs; run --local too
        with mlflow.start_run() as active:
            run_id = active.info.run_id
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            # Trees train on the CPU; the run records the GPUs the job saw (issue 24).
            gpus = str(len(edge_train.accelerators.visible_gpus()))
            mlflow.set_tags({**edge_train.lineage_tags(staged, fingerprint), "example": "boosting", "edge.gpus": gpus})
            mlflow.sklearn.log_model(model, name="model", **saving)
    summary = {
        "metrics": metrics,
        "data_fingerprint": fingerprint,
        "model": str(model_dir),
        "downloaded_blobs": staged.downloaded,
        "reused_blobs": staged.reused,
        "bytes_downloaded": staged.bytes_downloaded,
        "mlflow_run_id": run_id,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    code = main()
    # The interpreter's last collection would walk every object that MLflow, pandas and scikit-learn made (about
    # 1 s of a 4 s run here); frozen, it skips them. Files and the MLflow run are closed by now.
    gc.freeze()
    sys.exit(code)
