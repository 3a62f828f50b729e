"""The deadline rule of `clients/deadline.py`, for the code that travels into a job alone.

This package is installed into the job's image without the project around it, so it keeps its own
copy of the rule (tests/test_deadline_rule.py holds the two copies to the same answers):
- An attempt starts only while time is left.
- Our own waits are cut so that the last attempt starts `LAST_LOOK_S` before the deadline; with
  less than that left, the wait ends at once.
- A service's `Retry-After` (already capped by the caller) is never shortened: one that would end
  at or past the deadline is not waited at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
LAST_LOOK_S = 1.0


class Deadline:
    """`seconds` from now on the monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self._clock = seconds, clock
        self.end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self.end


def next_wait(deadline: Deadline, delay: float, retry_after: float | None = None) -> float | None:
    """How long to wait before the next attempt, by the rule above; None: give up now."""
    left = deadline.remaining()
    if retry_after is not None:
        wait = max(0.0, retry_after)
        return wait if wait < left else None
    if left <= LAST_LOOK_S:
        return None
    return max(0.0, min(delay, left - LAST_LOOK_S))


def poll_until(
    probe: Callable[[], T | None],
    deadline: Deadline,
    first_delay: float,
    max_delay: float,
    stop: threading.Event | None = None,
) -> T | None:
    """`probe()` until it returns something other than None, backing off from `first_delay`
    (doubling, at most `max_delay`, cut by `next_wait`); None when the deadline (or `stop`) came
    first."""
    stop = stop or threading.Event()
    delay = first_delay
    while True:
        result = probe()
        if result is not None:
            return result
        wait = next_wait(deadline, delay)
        if wait is None or stop.wait(wait) or deadline.expired():
            return None
        delay = min(delay * 2, max_delay)
