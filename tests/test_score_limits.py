"""The scoring script's request limit (training/serving/score.py, MAX_ROWS), at its edge."""

from __future__ import annotations

import json

import pytest

from training.serving import score


def body(fmt: str, rows: list[list[object]]) -> str:
    if fmt == "dataframe_split":
        return json.dumps({fmt: {"columns": ["tenure", "charges"], "data": rows}})
    return json.dumps({fmt: rows})


@pytest.mark.parametrize("fmt", ["inputs", "instances", "dataframe_split", "dataframe_records"])
def test_max_rows_are_accepted_and_one_more_is_refused_naming_the_limit(fmt: str) -> None:
    row: list[object] | dict[str, object] = [1, 2.5]
    rows = [dict(zip(["tenure", "charges"], row, strict=True))] if fmt == "dataframe_records" else [row]
    data, _ = score.parse(body(fmt, rows * score.MAX_ROWS))
    assert fmt in data
    with pytest.raises(score.RequestError, match=rf"{score.MAX_ROWS + 1} rows; at most {score.MAX_ROWS}"):
        score.parse(body(fmt, rows * (score.MAX_ROWS + 1)))


def test_the_limit_is_checked_before_any_row_is_read() -> None:
    """Too many rows is the error even when the rows are malformed: no per-row work on a flood."""
    with pytest.raises(score.RequestError, match=r"at most"):
        score.parse(body("inputs", [["x"]] * (score.MAX_ROWS + 1)))
