"""Scoring script: the contract of azureml-inference-server-http (`init()` once, `run(raw)` per request).

Serves any MLflow model: it loads the one MLflow model under AZUREML_MODEL_DIR with
`mlflow.pyfunc.load_model` (which dispatches to the flavor's own loader) and speaks MLflow's
scoring protocol on the inference server's route (POST /score):

Request:  {"dataframe_split": {"columns": [...], "data": [[...], ...]}}   or
          {"dataframe_records": [{"col": value, ...}, ...]}                 or
          {"instances": ...} / {"inputs": ...}   (TF-serving style), optional "params": {...}
Response: {"predictions": ...}   the model's own output (classes, probabilities, values, ...)

The model's signature is enforced by pyfunc itself; a request that does not fit it, or is not
JSON, too deep, too large or carries numbers no model column can hold, gets 400 and a message
naming the problem (MLflow's serving server answers the same way: mlflow/pyfunc/scoring_server).
The file needs the standard library at import time, and MLflow (with the model's own
requirements) in init(): it is copied into the image without the rest of the project.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("score")

MAX_BODY_CHARACTERS = 8 * 1024 * 1024
MAX_ROWS = 10_000
MAX_DEPTH = 32
# 19 digits hold any int64; a longer integer fits no model column, and Python would otherwise
# parse a 4,000-digit one (and raise on 4,301) only to fail later inside pandas or numpy.
MAX_INTEGER_DIGITS = 19
MAX_MESSAGE = 600
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

_model: Any = None


def model_folder(root: Path) -> Path:
    """The one folder at or below `root` holding an MLmodel file. On a managed online endpoint
    AZUREML_MODEL_DIR is the registered model's root, with the MLflow folder one level down."""
    found = sorted(p.parent for p in root.rglob("MLmodel") if p.is_file())
    if len(found) != 1:
        raise FileNotFoundError(f"expected one MLflow model (MLmodel file) under {root}, found {len(found)}")
    return found[0]


HUB_CA_FILE_VARIABLE = "EDGE_HUB_CA_FILE"
"""The Hub's CA certificates (PEM), as the edge deploy mounts them: /etc/edge-training/hub-ca.pem."""
BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


class TrustError(RuntimeError):
    """$EDGE_HUB_CA_FILE names a file that cannot be read or holds no certificate."""


def trust_hub_ca(environ: Any = None, directory: Path | None = None) -> str | None:
    """When $EDGE_HUB_CA_FILE names the Hub's CA: a bundle of certifi's roots followed by it, in
    `directory` (default: the temporary folder, an emptyDir on the cluster, the writable layer
    under Docker), set as REQUESTS_CA_BUNDLE and SSL_CERT_FILE unless those are set already.

    The same rule as the jobs' edge_train/trust.py (certifi kept whole, never replaced), written
    again here because this file is copied into the image without the rest of the project. Made
    at start-up rather than in the manifest, so the image's own command stays the one command
    (a Kubernetes `command` would replace it) and Docker and Kubernetes take the same route."""
    env = os.environ if environ is None else environ
    source = env.get(HUB_CA_FILE_VARIABLE)
    if not source:
        return None
    try:
        pem = Path(source).read_text()
    except OSError as error:
        raise TrustError(f"${HUB_CA_FILE_VARIABLE}: cannot read {source} ({error.strerror})") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise TrustError(f"${HUB_CA_FILE_VARIABLE}: {source} holds no PEM certificate")
    import tempfile

    import certifi

    public = Path(certifi.where()).read_text()
    folder = directory or Path(tempfile.gettempdir())
    bundle = folder / "edge-training-ca-bundle.pem"
    # Each worker runs init(): written under its own name, then renamed, so none reads half a file.
    partial = folder / f".{bundle.name}.{os.getpid()}"
    partial.write_text(public.rstrip("\n") + "\n\n# Azure Stack Hub CA (edge-training)\n" + pem.strip() + "\n")
    partial.replace(bundle)
    for name in BUNDLE_VARIABLES:
        env.setdefault(name, str(bundle))
    return str(bundle)


def init() -> None:
    """Load the model once per worker. AZUREML_MODEL_DIR is set by the image (ENV), by
    `serve --local` and by Azure ML on a managed online endpoint. The Hub's CA, when the deploy
    mounted one, is trusted first, before anything the model loads can open a connection."""
    global _model
    trust_hub_ca()
    import mlflow.pyfunc

    _model = mlflow.pyfunc.load_model(str(model_folder(Path(os.environ.get("AZUREML_MODEL_DIR", ".")))))


class RequestError(ValueError):
    """The request is not one this model can score; the message says why."""


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise RequestError(f"an integer of {len(text.lstrip('-'))} digits is larger than any model input can hold")
    return int(text)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(f"{text[:40]} is out of the range of a 64-bit float")
    return value


def _constant(text: str) -> Any:
    raise RequestError(f"{text} is not a JSON number")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse(raw: str | bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The body as ({format: payload}, params), checked for what no model can take."""
    if len(raw) > MAX_BODY_CHARACTERS:
        raise RequestError(f"the body is larger than {MAX_BODY_CHARACTERS} bytes")
    try:
        body = json.loads(raw, parse_int=_integer, parse_float=_number, parse_constant=_constant)
    except RecursionError:
        raise RequestError(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        if isinstance(error, RequestError):
            raise
        raise RequestError(f"the body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    if _depth(body) > MAX_DEPTH:
        raise RequestError(f"the body nests deeper than {MAX_DEPTH} levels")
    present = [key for key in FORMATS if key in body]
    unknown = sorted(set(body) - {*FORMATS, "params"})
    if len(present) != 1 or unknown:
        extra = f" (unknown keys: {', '.join(unknown)})" if unknown else ""
        raise RequestError(f"the body must have exactly one of {', '.join(FORMATS)}{extra}")
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise RequestError('"params" must be a JSON object')
    payload = body[present[0]]
    rows = payload.get("data") if present[0] == "dataframe_split" and isinstance(payload, dict) else payload
    if isinstance(rows, list) and len(rows) > MAX_ROWS:
        raise RequestError(f"{len(rows)} rows; at most {MAX_ROWS} per request")
    return {present[0]: payload}, params


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def predict(data: dict[str, Any], params: dict[str, Any] | None) -> str:
    """The model's predictions as MLflow's serving server writes them: {"predictions": ...}."""
    from io import StringIO

    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    schema = _model.metadata.get_input_schema()
    try:
        frame = scoring_server.infer_and_parse_data(data, schema)
    except MlflowException as error:
        raise RequestError(_short(error.message)) from None
    except (ValueError, TypeError, KeyError) as error:  # pandas refusing the shape of the payload
        raise RequestError(_short(f"the {next(iter(data))} payload cannot be read ({error})")) from None
    try:
        predictions = _model.predict(frame, params=params)
    except MlflowException as error:
        if 400 <= error.get_http_status_code() < 500:
            raise RequestError(_short(error.message)) from None
        raise
    result = StringIO()
    scoring_server.predictions_to_json(predictions, result)
    return result.getvalue()


def run(raw: str) -> Any:
    # The server turns an AMLResponse into the HTTP response as is (status and body).
    from azureml_inference_server_http.api.aml_response import AMLResponse

    try:
        data, params = parse(raw)
        body = predict(data, params)
    except RequestError as error:
        return AMLResponse({"message": f"bad request: {error}"}, 400, json_str=True)
    return AMLResponse(body, 200, {"Content-Type": "application/json"}, json_str=False)
