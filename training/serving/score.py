"""Scoring script: the contract of azureml-inference-server-http (`init()` once, `run(raw)` per request).

The same file serves in the image we build (training/serving/Dockerfile), on a managed online
endpoint, and here under `python -m training serve --local`. It needs only the Python standard
library, joblib and scikit-learn: it is copied into the image without the rest of the project.

Request:  {"data": [[f0, f1, ...], ...]}   (rows of numbers, in the order of features.json)
Response: [p, ...]                          (probability of the positive class for each row)
A request of any other shape gets 400 and a message naming what is wrong.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import joblib

MAX_ROWS = 10_000

_model: Any = None
_features: list[str] = []


def init() -> None:
    """Load the model once per worker. AZUREML_MODEL_DIR is set by the server (--model_dir), by
    the image (ENV) and by Azure ML on a managed online endpoint (the registered model's folder)."""
    global _model, _features
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    found = sorted(root.rglob("model.joblib"))
    if not found:
        raise FileNotFoundError(f"no model.joblib under AZUREML_MODEL_DIR={root}")
    _model = joblib.load(found[0])
    names = found[0].with_name("features.json")
    count = int(_model.n_features_in_)
    _features = json.loads(names.read_text()) if names.exists() else [f"f{i}" for i in range(count)]


class RequestError(ValueError):
    """The request is not one this model can score; the message says why."""


def rows_of(raw: str | bytes) -> list[list[float]]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"the body is not JSON ({error})") from None
    if not isinstance(body, dict) or "data" not in body:
        raise RequestError('the body must be a JSON object with "data": a list of rows')
    rows = body["data"]
    if not isinstance(rows, list) or not rows:
        raise RequestError('"data" must be a non-empty list of rows')
    if len(rows) > MAX_ROWS:
        raise RequestError(f'"data" has {len(rows)} rows; at most {MAX_ROWS} per request')
    width = len(_features)
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise RequestError(f"row {index} must be a list of {width} numbers ({', '.join(_features)})")
        for column, value in enumerate(row):
            # bool is an int to Python, but never a feature value.
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise RequestError(f"row {index}, {_features[column]}: {value!r} is not a finite number")
    return rows


def predict(rows: list[list[float]]) -> list[float]:
    return [float(p) for p in _model.predict_proba(rows)[:, 1]]


def run(raw: str) -> Any:
    try:
        rows = rows_of(raw)
    except RequestError as error:
        # The server turns an AMLResponse into the HTTP response as is (status and body).
        from azureml_inference_server_http.api.aml_response import AMLResponse

        return AMLResponse({"message": f"bad request: {error}"}, 400, json_str=True)
    return predict(rows)
