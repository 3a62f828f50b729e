"""Scoring script for the packaged model (Azure ML inference server contract: init and run)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import joblib

_model: Any = None


def init() -> None:
    global _model
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    _model = joblib.load(next(root.rglob("model.joblib")))


def run(raw: str) -> list[float]:
    rows = json.loads(raw)["data"]
    return [float(p) for p in _model.predict_proba(rows)[:, 1]]
