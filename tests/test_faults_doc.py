"""docs/operate/faults-and-deadlines.md states the deadlines and limits the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import arm, cloud, deadline
from training.src.edge_train import reader, staging

PAGE = (Path(__file__).resolve().parent.parent / "docs/operate/faults-and-deadlines.md").read_text()


@pytest.mark.parametrize(
    "said",
    [
        f"a GET {arm.REQUEST_DEADLINE:g} s, a PUT or DELETE with its wait {arm.OPERATION_DEADLINE:g} s",
        f"{cloud.DISCOVERY_DEADLINE:g} s for the whole discovery",
        f"capped at {deadline.RETRY_AFTER_MAX:g} s (`RETRY_AFTER_MAX`; staging: {reader.RETRY_AFTER_CAP_S:g} s)",
        f"`LAST_LOOK_S` ({deadline.LAST_LOOK_S:g} s)",
        f"{reader.REQUEST_DEADLINE_S:g} s per request (`REQUEST_DEADLINE_S`)",
        f"{reader.LIST_DEADLINE_S:g} s for the whole listing",
        f"more than {reader.MAX_PAGES:,} pages",
        f"goes on past {reader.MAX_PAGES} pages",
        f"connect {reader.CONNECT_TIMEOUT_S:g} s, read {reader.READ_TIMEOUT_S:g} s",
        f"connect {cloud.CONNECT_TIMEOUT:g} s, read {cloud.READ_TIMEOUT:g} s",
        f"{reader.ATTEMPTS} attempts",
        f"| {staging.LOCK_TIMEOUT_S:g} s |",
        f"{deadline.SIGNIN_DEADLINE:g} s per token request (`SIGNIN_DEADLINE`)",
    ],
)
def test_the_page_states_the_codes_numbers(said: str) -> None:
    assert said in PAGE


def test_the_largest_listed_size_is_azures_block_blob_maximum() -> None:
    assert reader.MAX_BLOB_BYTES == 50_000 * 4000 * 1024 * 1024
    assert "50,000 x 4,000 MiB (about 190.7 TiB)" in PAGE
