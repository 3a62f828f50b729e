"""One deadline rule, two copies: clients/deadline.py for the project, edge_train/deadline.py for
the job package that travels alone. Both must give the same answer to every wait."""

from __future__ import annotations

import itertools
import threading

from clients import deadline as project_rule
from tests.harness.clock import FakeClock
from training.src.edge_train import deadline as job_rule

LEFT = [0.0, 0.5, 1.0, 1.5, 3.0, 10.0, 45.0]
DELAYS = [0.0, 0.01, 0.9, 2.0, 30.0]
RETRY_AFTER = [None, 0.0, 0.4, 2.0, 9.99, 10.0, 30.0]


def test_both_copies_wait_alike() -> None:
    clock = FakeClock(100.0)
    differ = []
    for left, delay, retry_after in itertools.product(LEFT, DELAYS, RETRY_AFTER):
        ours = project_rule.next_wait(project_rule.Deadline(left, clock), delay, retry_after)
        theirs = job_rule.next_wait(job_rule.Deadline(left, clock), delay, retry_after)
        if ours != theirs:
            differ.append((left, delay, retry_after, ours, theirs))
    assert differ == []
    assert job_rule.LAST_LOOK_S == project_rule.LAST_LOOK_S


def test_the_jobs_poll_backs_off_and_takes_its_last_look_before_the_deadline() -> None:
    """The lock wait's loop: doubling from the first delay, capped, the last wait cut so that one
    more probe starts LAST_LOOK_S before the deadline."""
    clock = FakeClock(100.0)

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            clock.sleep(float(timeout or 0))
            return False

    probes: list[float] = []

    def never() -> None:
        probes.append(clock.now - 100.0)

    assert job_rule.poll_until(never, job_rule.Deadline(5.0, clock), 0.5, 2.0, stop=Stop()) is None
    assert clock.sleeps == [0.5, 1.0, 2.0, 0.5]
    assert probes == [0.0, 0.5, 1.5, 3.5, 4.0]


def test_the_projects_retry_backs_off_like_the_jobs_poll() -> None:
    """retry_until (SSH, deploy and image-build waits) waits exactly as the job copy does."""
    clock = FakeClock(100.0)
    assert project_rule.retry_until(lambda: False, project_rule.Deadline(5.0, clock), clock.sleep, 0.5, 2.0) is False
    assert clock.sleeps == [0.5, 1.0, 2.0, 0.5]
    tries = iter([False, False, True])
    assert project_rule.retry_until(lambda: next(tries), project_rule.Deadline(60.0, clock), clock.sleep, 1.0, 2.0)
    assert clock.sleeps[4:] == [1.0, 2.0]
