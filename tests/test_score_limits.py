"""The scoring script's request limit (training/serving/score.py, MAX_ROWS), at its edge."""

from __future__ import annotations

import json

import pytest

from training.serving import score


@pytest.fixture
def two_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score, "_features", ["tenure", "charges"])


def test_max_rows_are_accepted_and_one_more_is_refused_naming_the_limit(two_features) -> None:
    assert len(score.rows_of(json.dumps({"data": [[1, 2.5]] * score.MAX_ROWS}))) == score.MAX_ROWS
    with pytest.raises(score.RequestError, match=rf'"data" has {score.MAX_ROWS + 1} rows; at most {score.MAX_ROWS}'):
        score.rows_of(json.dumps({"data": [[1, 2.5]] * (score.MAX_ROWS + 1)}))


def test_the_limit_is_checked_before_any_row_is_read(two_features) -> None:
    """Too many rows is the error even when the rows are malformed: no per-row work on a flood."""
    with pytest.raises(score.RequestError, match=r"at most"):
        score.rows_of(json.dumps({"data": [["x"]] * (score.MAX_ROWS + 1)}))
