"""Does the trained model carry training rows verbatim? Checked where the data is.

The training code calls `check(model, model_dir, rows, outputs_dir)` after saving its MLflow
model: every numeric array reachable from the model object (estimator attributes, pipelines,
lists, dicts) and every list of numbers in the model folder's JSON files is compared row by row
with the training data, by SHA-256 of each row's float64 bytes. What it writes beside the model,
`<outputs>/egress_rows.json`, holds how many rows were compared and, per place, how many matched:
counts, never rows or hashes. `python -m training register` and `package` read it and refuse a
model with matches (training/model_audit.py does the rest of the audit).

A row stored in another precision (float32) or transformed (scaled, encoded) is not found here:
the attribute checks of the audit cover the estimators known to keep their samples.
"""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPORT_FILE = "egress_rows.json"
MAX_WALK = 200_000
MAX_JSON_BYTES = 16 * 1024 * 1024


def row_hashes(rows: Any) -> set[str]:
    """SHA-256 of each row's float64 bytes (-0.0 read as 0.0)."""
    import numpy as np

    array = np.asarray(rows, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"training rows must be 2-D, not {array.ndim}-D")
    array = array + 0.0  # -0.0 + 0.0 is 0.0: one byte pattern per value
    return {hashlib.sha256(row.tobytes()).hexdigest() for row in np.ascontiguousarray(array)}


def is_table(value: Any) -> bool:
    return type(value).__name__ in ("ndarray", "DataFrame", "Series", "matrix") and hasattr(value, "shape")


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"[{key!r}]", item
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield f"[{index}]", item
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for key, item in vars(value).items():
            yield f".{key}", item


def walk(root: Any) -> Iterator[tuple[str, str, Any]]:
    """(path, attribute name, value) of everything reachable from `root`, each object once;
    tables (arrays, frames) are yielded, not walked into."""
    seen: set[int] = set()
    stack: list[tuple[str, str, Any]] = [("model", "", root)]
    visited = 0
    while stack and visited < MAX_WALK:
        path, name, value = stack.pop()
        if id(value) in seen or isinstance(value, str | bytes | int | float | bool | types.ModuleType | type(None)):
            continue
        seen.add(id(value))
        visited += 1
        yield path, name, value
        if is_table(value):
            continue
        stack.extend((path + key, key.lstrip("."), item) for key, item in _children(value))


def numeric_rows(value: Any, columns: int) -> Any:
    """The value as a float64 2-D array of `columns` columns (a 1-D one of that length is one
    row), or None when it is not one."""
    import numpy as np

    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            return None
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim == 1 and array.shape[0] == columns:
        array = array.reshape(1, columns)
    return array if array.ndim == 2 and array.shape[1] == columns else None


def json_rows(folder: Path, columns: int) -> Iterator[tuple[str, list[list[float]]]]:
    """Lists of `columns` numbers inside the folder's JSON files."""
    for path in sorted(p for p in folder.rglob("*.json") if p.is_file() and p.stat().st_size <= MAX_JSON_BYTES):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        stack, rows = [document], []
        while stack:
            item = stack.pop()
            if (
                isinstance(item, list)
                and len(item) == columns
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item)
            ):
                rows.append(item)
            elif isinstance(item, list | dict):
                stack.extend(item.values() if isinstance(item, dict) else item)
        if rows:
            yield path.relative_to(folder).as_posix(), rows


def matches(model: Any, model_dir: Path | None, hashes: set[str], columns: int) -> list[dict[str, Any]]:
    """[{"where": place, "rows": count}] for each place holding training rows verbatim."""
    sources: list[tuple[str, Any]] = [(path, value) for path, _, value in walk(model) if is_table(value)]
    if model_dir is not None:
        sources += list(json_rows(model_dir, columns))
    found = []
    for where, value in sources:
        rows = numeric_rows(value, columns)
        if rows is not None and (count := len(row_hashes(rows) & hashes)):
            found.append({"where": where, "rows": count})
    return found


def check(model: Any, model_dir: Path, rows: Any, outputs_dir: Path) -> dict[str, Any]:
    """Compare `rows` (the training data, 2-D numbers) with `model` and its saved folder; write
    and return the report (counts only)."""
    import numpy as np

    array = np.asarray(rows, dtype=np.float64)
    hashes = row_hashes(array)
    report = {"rows_compared": int(array.shape[0]), "findings": matches(model, model_dir, hashes, array.shape[1])}
    (outputs_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
