"""Tiny MLflow models logged by the real libraries, once per session: the serving tests score
them through the real server, the audit tests inspect them. All are trained on one small frame
(TRAINING), so a model that keeps rows keeps rows of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ["f0", "f1", "f2", "f3", "f4", "f5"]
ROWS = 240
# The churn example's requirements (run --local writes the same): one serving virtualenv for all
# the scikit-learn models; the LightGBM model adds its library and gets a second one.
SKLEARN_REQUIREMENTS = ["mlflow-skinny==3.17.2", "scikit-learn==1.9.1", "skops==0.16.0"]
LIGHTGBM_REQUIREMENTS = [*SKLEARN_REQUIREMENTS, "lightgbm==4.7.0"]


def training_frame() -> tuple[Any, Any, Any]:
    """(features, binary labels, three-class labels), seeded."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(ROWS, len(COLUMNS))).round(6), columns=COLUMNS)
    binary = (x.f0 + 0.5 * x.f1 > 0).astype(int)
    three = np.digitize(x.f0 - x.f2, [-0.5, 0.5])
    return x, binary, pd.Series(three, name="class")


def _save_sklearn(model: Any, path: Path, x: Any, **extra: Any) -> Path:
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))  # our own model: trusted
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(x, model.predict(x)),
        pip_requirements=SKLEARN_REQUIREMENTS,
        skops_trusted_types=trusted,
        **extra,
    )
    return path


def save_models(root: Path) -> dict[str, Path]:
    """Every tiny model, by name, each in its own MLflow folder under `root`."""
    import lightgbm
    import mlflow.lightgbm
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, binary, three = training_frame()
    made = {
        "linear": _save_sklearn(LogisticRegression().fit(x, binary), root / "linear", x),
        "boosted": _save_sklearn(HistGradientBoostingClassifier(max_iter=15).fit(x, binary), root / "boosted", x),
        "regressor": _save_sklearn(Ridge().fit(x, x.f0 * 2 - x.f3), root / "regressor", x),
        "multiclass": _save_sklearn(LogisticRegression().fit(x, three), root / "multiclass", x),
        "knn": _save_sklearn(
            make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(x, binary), root / "knn", x
        ),
        "svm": _save_sklearn(SVC().fit(x, binary), root / "svm", x),
        "with-example": _save_sklearn(
            LogisticRegression().fit(x, binary), root / "with-example", x, input_example=x.head(2)
        ),
    }
    booster = lightgbm.LGBMClassifier(n_estimators=12, num_leaves=7, verbose=-1).fit(x, three)
    mlflow.lightgbm.save_model(
        booster,
        root / "lightgbm",
        signature=infer_signature(x, booster.predict(x)),
        pip_requirements=LIGHTGBM_REQUIREMENTS,
    )
    made["lightgbm"] = root / "lightgbm"
    return made
