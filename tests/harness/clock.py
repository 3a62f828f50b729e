"""A clock for code that takes `clock` and `sleep` (clients/deadline.py and its callers)."""

from __future__ import annotations

from collections.abc import Callable


class FakeClock:
    """Time that moves only when the code under test sleeps: it records each sleep and runs
    `on_sleep(n)` after the n-th, so a test can change the world between attempts (start sshd,
    install a key) without a real wait."""

    def __init__(self, start: float = 0.0, on_sleep: Callable[[int], None] = lambda _n: None) -> None:
        self.start = self.now = start
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self._on_sleep(len(self.sleeps))
