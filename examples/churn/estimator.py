"""The churn example's estimator: a scaled logistic regression on CSV files, and its metrics."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

LABEL = "label"


@dataclass(frozen=True)
class Hyperparameters:
    c: float = 1.0
    max_iter: int = 500
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    roc_auc: float
    f1: float
    rows: int
    features: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DataError(ValueError):
    pass


def _read(path: Path, header: list[str] | None, rows: list[list[float]]) -> list[str] | None:
    """Append the file's rows to `rows`; the header all files share."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        this_header = next(reader, None)
        if this_header is None:
            return header
        if header is not None and this_header != header:
            raise DataError(f"{path.name} has columns {this_header}, expected {header}")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(this_header):
                raise DataError(f"{path.name} line {line} has {len(row)} values, the header {len(this_header)}")
            try:
                rows.append([float(v) for v in row])
            except ValueError:
                raise DataError(f"{path.name} line {line} holds a value that is not a number") from None
    return this_header


def load_csvs(paths: Iterable[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features and labels from CSV files that share one header with a `label` column."""
    header: list[str] | None = None
    rows: list[list[float]] = []
    for path in sorted(paths):
        try:
            header = _read(path, header, rows)
        except UnicodeDecodeError:
            raise DataError(f"{path.name} is not UTF-8 text") from None
    if header is None or not rows:
        raise DataError("no rows in the staged CSV files")
    if LABEL not in header:
        raise DataError(f"no '{LABEL}' column in {header}")
    table = np.asarray(rows, dtype=float)
    label_index = header.index(LABEL)
    features = [h for h in header if h != LABEL]
    return np.delete(table, label_index, axis=1), table[:, label_index].astype(int), features


def train(x: np.ndarray, y: np.ndarray, params: Hyperparameters) -> tuple[Pipeline, Metrics]:
    if len(set(y.tolist())) != 2:
        raise DataError(f"the label must have two classes, found {sorted(set(y.tolist()))}")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=params.test_fraction, random_state=params.seed, stratify=y
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=params.c, max_iter=params.max_iter))
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    scores = model.predict_proba(x_test)[:, 1]
    metrics = Metrics(
        accuracy=float(accuracy_score(y_test, predicted)),
        roc_auc=float(roc_auc_score(y_test, scores)),
        f1=float(f1_score(y_test, predicted)),
        rows=len(y),
        features=int(x.shape[1]),
    )
    return model, metrics
