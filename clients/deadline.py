"""One deadline for a whole operation, and the one backoff loop that waits inside it.

Every wait (TCP, the SSH handshake and sign-in, first boot, a remote command, an HTTP call and its
body, a `Retry-After`, a poll of a long-running operation) takes what is left of one `Deadline`
rather than a fixed timeout of its own, so the sum can never run past what the user configured.
The clock and the sleep are injectable: tests move time by hand instead of sleeping.

The rule at the deadline's edge, the same in every loop here (docs/operate/faults-and-deadlines.md):
- An attempt (a request, a probe, a connection) starts only while time is left.
- Our own waits (backoff, poll intervals) are cut so that the last attempt starts `LAST_LOOK_S`
  before the deadline, not at it: a wait that ends exactly at the deadline and is followed by no
  attempt would only have wasted the time. With less than that left, the loop ends at once.
- A service's `Retry-After` is capped at `RETRY_AFTER_MAX` and never shortened (an earlier retry
  is refused again); one that would end at or past the deadline is not slept at all: the call fails
  at once with `DeadlineExceeded`, naming the wait.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from azure.core.exceptions import ServiceResponseTimeoutError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy, RetryPolicy
from azure.core.pipeline.transport import HttpTransport

Clock = Callable[[], float]
Sleep = Callable[[float], None]
T = TypeVar("T")

BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 60.0
"""Retry-After is honoured up to this: a misbehaving endpoint must not park a deployment for hours."""
LAST_LOOK_S = 1.0
"""Our own waits end this long before the deadline, so the last attempt starts in time."""
BODY_CHUNK = 64 * 1024


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

    def within(self, seconds: float) -> Deadline:
        """A deadline of `seconds` from now, or this one when it ends sooner: for a step (one
        request, one sign-in) that has a limit of its own inside the caller's."""
        return Deadline(min(seconds, self.remaining()), self.clock)


def next_wait(deadline: Deadline, delay: float, retry_after: float | None = None) -> float | None:
    """How long to wait before the next attempt, by the rule above; None: give up now."""
    left = deadline.remaining()
    if retry_after is not None:
        wait = min(max(0.0, retry_after), RETRY_AFTER_MAX)
        return wait if wait < left else None
    if left <= LAST_LOOK_S:
        return None
    return max(0.0, min(delay, left - LAST_LOOK_S))


def retry_until(
    attempt: Callable[[], bool],
    deadline: Deadline,
    sleep: Sleep = time.sleep,
    first_delay: float = 1.0,
    max_delay: float = BACKOFF_MAX,
) -> bool:
    """Call `attempt()` until it returns True or the deadline passes, backing off exponentially
    (doubling from `first_delay`, at most `max_delay`, cut by `next_wait`). True if it succeeded."""
    done = poll_until(lambda: True if attempt() else None, deadline, first_delay, sleep, max_interval=max_delay)
    return done is not None


def poll_until(
    probe: Callable[[], T | None],
    deadline: Deadline,
    interval: float,
    sleep: Sleep = time.sleep,
    wait_first: bool = False,
    max_interval: float | None = None,
) -> T | None:
    """`probe()` every `interval` seconds (cut by `next_wait`) until it returns something other than
    None; None when the deadline came first. The probe raises to end the wait on a failure that
    waiting will not change. `wait_first`: the answer in hand already says "not yet" (a 202, a
    non-terminal state), so the first probe comes after one interval, as ARM asks of clients.
    `max_interval`: back off, doubling the interval after each wait up to this."""
    waiting = wait_first
    while True:
        if waiting:
            wait = next_wait(deadline, interval)
            if wait is None:
                return None
            sleep(wait)
            if deadline.expired():
                return None
            if max_interval is not None:
                interval = min(interval * 2, max_interval)
        waiting = True
        result = probe()
        if result is not None:
            return result


def certificate_refused(error: BaseException) -> bool:
    """Whether `error` comes of a TLS certificate this side does not trust (no trusted CA vouches
    for it, or it names another host): ssl.SSLCertVerificationError anywhere in what raised it.
    azure-core wraps it as ServiceRequestError(requests' SSLError(urllib3's MaxRetryError(urllib3's
    SSLError(...)))), the links being `inner_exception`, `reason`, causes and arguments."""
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending and len(seen) < 32:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        seen.add(id(item))
        pending += [item.__cause__, item.__context__, *item.args]
        pending += [getattr(item, "inner_exception", None), getattr(item, "reason", None)]
    return False


class UntrustedNotRetried:
    """For azure-core retry policies (and the storage SDK's, which share `increment`): a certificate
    refused is not retried, since it will not change within any deadline, so an operator who has
    not given the Hub's CA hears so at once instead of after the backoffs."""

    def increment(self, settings: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        error = kwargs.get("error")
        if error is not None and certificate_refused(error):
            return False
        return super().increment(settings, *args, **kwargs)  # type: ignore[misc,no-any-return]


class DeadlineRetryPolicy(UntrustedNotRetried, RetryPolicy):
    """azure-core's RetryPolicy (408, 429, 5xx and connection errors, but not a certificate
    refused; backoff, `Retry-After`), bounded by one deadline: every attempt's connect and read
    timeouts are cut to what is left, and a wait that would end past the deadline is not slept at
    all: the call fails at once with `DeadlineExceeded`. A request can carry its own deadline as
    the `deadline` option (`send_request(..., deadline=d)`); it replaces `self.deadline` from then
    on.

    Stock RetryPolicy sleeps whatever `Retry-After` says (azure-core policies/_retry.py,
    `_sleep_for_retry`), so an answer of `Retry-After: 86400` would park the caller for a day."""

    def __init__(self, deadline: Deadline, connect_timeout: float, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline
        self._connect, self._read = connect_timeout, read_timeout

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        given = request.context.options.pop("deadline", None)
        if given is not None:
            self.deadline = given
        request.context["deadline"] = self.deadline
        return super().send(request)

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
        backoff = self.get_backoff_time(settings)
        left = self.deadline.remaining()
        wait = min(retry_after, RETRY_AFTER_MAX) if retry_after is not None else backoff
        if wait >= left:
            what = f"Retry-After: {retry_after:g}s" if retry_after is not None else f"a {wait:g}s backoff"
            status = f"HTTP {response.http_response.status_code} with " if response is not None else ""
            raise DeadlineExceeded(f"the service answered {status}{what}, beyond the {left:.0f}s left of the deadline")
        if wait > 0:
            transport.sleep(wait)


SIGNIN_DEADLINE = 60.0
"""One token request to Microsoft Entra ID or AD FS, its retries and their waits included."""


class SignInRetryPolicy(DeadlineRetryPolicy):
    """azure-identity's retry policy, bounded: passed as `retry_policy_class` (azure-identity
    `_internal/pipeline.py`, `build_pipeline`), every token request gets its own deadline of
    `SIGNIN_DEADLINE`, with connect and read timeouts and any `Retry-After` cut to it, and the
    token response's body read under it too (a `BodyDeadlinePolicy` is linked in right after this
    policy, where `ArmClient` has its own). Stock, a token endpoint answering `Retry-After: 86400`
    parks the sign-in for a day, and one trickling its answer a byte per read timeout, for ever."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Deadline(SIGNIN_DEADLINE), 10.0, 30.0, **kwargs)

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if not isinstance(self.next, BodyDeadlinePolicy):
            # azure-core links a pipeline's policies through `next` when it is built; the
            # credential builds its own, so ours is linked in on its first request.
            body = BodyDeadlinePolicy()
            body.next, self.next = self.next, body
        request.context.options.setdefault("deadline", Deadline(SIGNIN_DEADLINE))
        return super().send(request)


class BodyDeadlinePolicy(HTTPPolicy):  # type: ignore[type-arg]
    """The response body read under the request's deadline, not only a per-read timeout.

    A transport's read timeout bounds each socket read: a body trickled one byte per read-timeout
    never trips it. Here the response is streamed from the transport and read chunk by chunk with
    the socket's timeout set to what is left of the deadline before every read, so the whole body
    ends by the deadline or the call fails. Needs the requests transport (the default and what the
    tests use); another transport's body is read as that transport reads it.

    Sits after `DeadlineRetryPolicy`, which puts the deadline into the request's context."""

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        options = request.context.options
        caller_streams = bool(options.get("stream"))
        options["stream"] = True
        try:
            response = self.next.send(request)
        finally:
            options["stream"] = caller_streams
        if caller_streams:
            return response
        deadline: Deadline | None = request.context.get("deadline")
        http_response = response.http_response
        raw = getattr(getattr(http_response, "internal_response", None), "raw", None)
        if deadline is None or raw is None or not hasattr(raw, "read1"):
            http_response.read()
            return response
        data = read_body(raw, deadline, f"{request.http_request.method} {request.http_request.url.split('?')[0]}")
        http_response._content = data  # what the transport's own read() would set
        http_response.internal_response._content = data
        http_response.internal_response._content_consumed = True
        return response


def _socket_of(raw: Any) -> socket.socket | None:
    """The socket under a urllib3 response: the connection's while it is kept alive, else the one
    http.client's response still reads from (a `Connection: close` answer detaches it)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:
        reader = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def read_body(raw: Any, deadline: Deadline, what: str) -> bytes:
    """A urllib3 response's whole body (decoded as requests would) by `deadline`: each read waits at
    most what is left of it."""
    chunks: list[bytes] = []
    sock = _socket_of(raw)
    late = f"{what}: the answer's body was still arriving at the {deadline.seconds:g}s deadline"
    try:
        while True:
            left = deadline.remaining()
            if left <= 0:
                raise DeadlineExceeded(late)
            if sock is not None:
                with contextlib.suppress(OSError):  # closed once the last byte came: read1 says so
                    sock.settimeout(left)
            try:
                chunk = raw.read1(BODY_CHUNK, decode_content=True)
            except Exception as error:  # urllib3's ReadTimeoutError, ProtocolError, ...
                if deadline.expired():
                    raise DeadlineExceeded(late) from None
                raise ServiceResponseTimeoutError(f"{what}: {error}") from error
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except BaseException:
        raw.close()  # the connection is mid-body: never back into the pool
        raise
