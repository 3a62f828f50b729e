"""One deadline for a whole operation, and the one backoff loop that waits inside it.

Every wait of the attach step (TCP, the SSH handshake and sign-in, first boot, a remote command,
an HTTP call, a `Retry-After`) takes what is left of one `Deadline` rather than a fixed timeout of
its own, so the sum can never run past what the user configured. The clock and the sleep are
injectable: tests move time by hand instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import HttpTransport

Clock = Callable[[], float]
Sleep = Callable[[float], None]

BACKOFF_MAX = 30.0


class DeadlineExceeded(RuntimeError):
    """The operation's deadline passed (or a wait asked for would pass it); says what was waited for."""


@dataclass(frozen=True)
class Deadline:
    """`seconds` from when it was made, on `clock`."""

    seconds: float
    clock: Clock = field(default=time.monotonic, repr=False, compare=False)
    start: float = field(default=-1.0, repr=False)

    def __post_init__(self) -> None:
        if self.start < 0:
            object.__setattr__(self, "start", self.clock())

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.end

    def cap(self, seconds: float, floor: float = 0.1) -> float:
        """`seconds`, or what is left when less (never below `floor`: a zero socket timeout means
        non-blocking, not "now")."""
        return max(floor, min(seconds, self.remaining()))


def retry_until(
    attempt: Callable[[], bool],
    deadline: Deadline,
    sleep: Sleep = time.sleep,
    first_delay: float = 1.0,
    max_delay: float = BACKOFF_MAX,
) -> bool:
    """Call `attempt()` until it returns True or the deadline passes, backing off exponentially
    (doubling from `first_delay`, at most `max_delay`, never past the deadline). True if it succeeded."""
    delay = first_delay
    while True:
        if attempt():
            return True
        remaining = deadline.remaining()
        if remaining <= 0:
            return False
        sleep(min(delay, remaining))
        if deadline.expired():  # an attempt now would only run past the deadline
            return False
        delay = min(delay * 2, max_delay)


class DeadlineRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy (408, 429, 5xx and connection errors; backoff, `Retry-After`),
    bounded by one deadline: every attempt's connect and read timeouts are cut to what is left,
    and a wait (the backoff or the service's `Retry-After`) that would end past the deadline is
    not slept at all: the call fails at once with `DeadlineExceeded`.

    Stock RetryPolicy sleeps whatever `Retry-After` says (azure-core policies/_retry.py,
    `_sleep_for_retry`), so an answer of `Retry-After: 86400` would park the caller for a day."""

    def __init__(self, deadline: Deadline, connect_timeout: float, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline
        self._connect, self._read = connect_timeout, read_timeout

    def _configure_timeout(
        self, request: PipelineRequest[Any], absolute_timeout: float, is_response_error: bool
    ) -> None:
        if self.deadline.expired():
            raise DeadlineExceeded(
                f"the {self.deadline.seconds:g}s deadline passed before {request.http_request.method} could be sent"
            )
        options = request.context.options
        options["connection_timeout"] = self.deadline.cap(self._connect)
        options["read_timeout"] = self.deadline.cap(self._read)
        super()._configure_timeout(request, absolute_timeout, is_response_error)

    def sleep(
        self,
        settings: dict[str, Any],
        transport: HttpTransport[Any, Any],
        response: PipelineResponse[Any, Any] | None = None,
    ) -> None:
        retry_after = self.get_retry_after(response) if response is not None else None
        wait = retry_after if retry_after is not None else self.get_backoff_time(settings)
        left = self.deadline.remaining()
        if wait >= left:
            what = f"Retry-After: {retry_after:g}s" if retry_after is not None else f"a {wait:g}s backoff"
            status = f"HTTP {response.http_response.status_code} with " if response is not None else ""
            raise DeadlineExceeded(f"the service answered {status}{what}, beyond the {left:.0f}s left of the deadline")
        if wait > 0:
            transport.sleep(wait)
