"""Model egress audit: does this MLflow model carry training rows?

The model is the one thing that leaves the edge. `register` and `package` (and their --dry-run)
run this audit on the model folder before anything is uploaded, and refuse a model with findings
unless the operator names a reason (`--allow-model-egress REASON`, kept as a tag on the model).
What it looks for (docs/serve/model-egress-audit.md has the reasons and the limits):

- estimator attributes known to keep training samples: nearest neighbours' `_fit_X`, SVMs'
  `support_vectors_`, Gaussian processes' `X_train_`, kernel models' `X_fit_`, label propagation's
  `X_`, found anywhere in the model (pipelines, meta-estimators, lists and dicts are walked);
- any array or data frame in the loaded model as wide as the training data (the signature's
  column count) with more than `row_threshold` rows;
- input examples (`input_example.json`, `serving_input_example.json`, MLmodel's
  `saved_input_example_info`): MLflow copies rows of the training data there;
- data-like files (CSV, Parquet, NumPy, Feather, HDF5, ...) anywhere in the folder;
- with the training data at hand (`training_rows`): any training row found verbatim in the
  model's arrays or in its JSON files, compared by SHA-256 of the row's float64 bytes: the
  hashes stay in this process and only the count is reported.

To look inside, the audit loads the model with `mlflow.pyfunc.load_model`, which for pickle or
cloudpickle flavors runs the pickle's code. It loads only the model the user is registering or
packaging, the one they already trust to run in their own server, and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import mlflow_model
from training.src.edge_train import model_rows

log = logging.getLogger(__name__)

ROW_THRESHOLD = 32
# Attributes that hold the training samples themselves, by the estimators that set them
# (scikit-learn: neighbors/_base.py, svm/_base.py, gaussian_process/_gpr.py and _gpc.py,
# kernel_ridge.py, decomposition/_kernel_pca.py, semi_supervised/_label_propagation.py).
SAMPLE_ATTRIBUTES = {
    "_fit_X": "nearest-neighbour models keep every training row",
    "support_vectors_": "support vector machines keep their support vectors, which are training rows",
    "X_train_": "Gaussian processes keep every training row",
    "X_fit_": "kernel models keep every training row",
    "X_": "label propagation keeps every training row",
}
EXAMPLE_FILES = ("input_example.json", "serving_input_example.json")
DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".feather", ".arrow", ".orc", ".avro", ".npy", ".npz", ".h5",
                 ".hdf5", ".jsonl", ".xlsx", ".xls", ".db", ".sqlite")  # fmt: skip
ROW_CHECK_FILE = model_rows.REPORT_FILE


class ModelEgressRefused(RuntimeError):
    """The model carries training rows (or could not be checked); the message lists the findings."""


@dataclass(frozen=True)
class Finding:
    kind: str
    """sample-attribute, data-array, input-example, data-file, training-rows, not-inspected"""
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[Finding, ...]
    columns: int | None
    rows_checked: bool
    """Whether training rows were at hand and compared."""

    @property
    def passed(self) -> bool:
        return not self.findings

    def tags(self, allowed_reason: str | None = None) -> dict[str, str]:
        """The model tags `register` sets: the verdict, the override's reason, the findings."""
        if self.passed:
            verdict = "passed" + ("" if self.rows_checked else " (no training rows at hand to compare)")
        else:
            verdict = f"allowed: {allowed_reason}" if allowed_reason else "refused"
        tags = {"egress_audit": verdict}
        if self.findings:
            text = json.dumps([str(f) for f in self.findings])
            tags["egress_findings"] = text if len(text) <= 5000 else text[:4997] + "..."
        return tags


def _file_findings(folder: Path, metadata: dict[str, Any]) -> list[Finding]:
    findings = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if path.name in EXAMPLE_FILES:
            findings.append(Finding("input-example", name, "an input example: MLflow copies training rows into it"))
        elif path.name.lower().endswith(DATA_SUFFIXES):
            findings.append(Finding("data-file", name, "a data file has no place in a model"))
    if metadata.get("saved_input_example_info") and not any(f.kind == "input-example" for f in findings):
        findings.append(Finding("input-example", "MLmodel", "saved_input_example_info names an input example"))
    return findings


def _model_findings(raw: Any, columns: int | None, row_threshold: int) -> tuple[list[Finding], list[tuple[str, Any]]]:
    """Findings in the loaded model, and its tables (for the row comparison)."""
    findings, tables = [], []
    for path, name, value in model_rows.walk(raw):
        if name in SAMPLE_ATTRIBUTES and value is not None:
            shape = getattr(value, "shape", None)
            detail = SAMPLE_ATTRIBUTES[name] + (f" ({shape[0]} rows)" if shape else "")
            findings.append(Finding("sample-attribute", path, detail))
            continue
        if model_rows.is_table(value):
            tables.append((path, value))
            shape = value.shape
            if columns and len(shape) == 2 and shape[1] == columns and shape[0] > row_threshold:
                detail = f"{shape[0]} rows of the training data's {columns} columns"
                findings.append(Finding("data-array", path, detail))
    return findings, tables


def load_raw_model(folder: Path) -> Any:
    """The flavor's own model object (the estimator, the booster), loaded through pyfunc."""
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(str(folder))
    try:
        return loaded.get_raw_model()
    except Exception:  # flavors without a raw model: walk the pyfunc wrapper itself
        return loaded


def row_check_beside(model_dir: Path) -> dict[str, Any] | None:
    """The row check the training run wrote beside its model (outputs/egress_rows.json), if any."""
    path = model_dir.parent / ROW_CHECK_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise ModelEgressRefused(f"{path} is not the JSON a training run writes") from None
    if not isinstance(report, dict) or not isinstance(report.get("findings"), list):
        raise ModelEgressRefused(f"{path} is not a row check (no findings list)")
    return report


def audit(
    folder: Path,
    *,
    training_rows: Any = None,
    row_check: dict[str, Any] | None = None,
    row_threshold: int = ROW_THRESHOLD,
    load: bool = True,
) -> AuditReport:
    """Audit the MLflow model at or below `folder`. `training_rows`: the training data (2-D,
    numbers), or a set of row_hashes() of it, when at hand; `row_check`: the report of the same
    comparison made where the data was (edge_train.model_rows, in the job)."""
    model = mlflow_model.read(folder)
    columns = model.input_columns
    findings = _file_findings(model.path, model.metadata)
    tables: list[tuple[str, Any]] = []
    if load:
        try:
            raw = load_raw_model(model.path)
        except Exception as error:  # any loader's failure: the model could not be inspected
            findings.append(Finding("not-inspected", "model", f"could not be loaded to inspect it ({error})"[:300]))
        else:
            found, tables = _model_findings(raw, columns, row_threshold)
            findings += found
    rows_checked = training_rows is not None and columns is not None
    if rows_checked:
        hashes = training_rows if isinstance(training_rows, set) else model_rows.row_hashes(training_rows)
        findings += _row_findings(model.path, tables, hashes, int(columns or 0))
    if row_check is not None:
        rows_checked = True
        findings += [
            Finding("training-rows", str(f.get("where")), f"{f.get('rows')} training row(s) verbatim (in the job)")
            for f in row_check["findings"]
            if isinstance(f, dict)
        ]
    return AuditReport(tuple(findings), columns, rows_checked)


def _row_findings(folder: Path, tables: Iterable[tuple[str, Any]], hashes: set[str], columns: int) -> list[Finding]:
    sources = [*tables, *model_rows.json_rows(folder, columns)]
    findings = []
    for where, value in sources:
        rows = model_rows.numeric_rows(value, columns)
        if rows is not None and (count := len(model_rows.row_hashes(rows) & hashes)):
            findings.append(Finding("training-rows", where, f"{count} training row(s) verbatim"))
    return findings


def check(report: AuditReport, allowed_reason: str | None) -> None:
    """Refuse a model with findings, unless the operator named a reason."""
    if report.passed:
        return
    listed = "; ".join(str(f) for f in report.findings)
    if allowed_reason:
        log.warning("model egress allowed (%s) despite: %s", allowed_reason, listed)
        return
    raise ModelEgressRefused(
        f"the model may carry training rows: {listed}. Fix the model, or pass --allow-model-egress REASON "
        "(kept as a tag on the model)"
    )
