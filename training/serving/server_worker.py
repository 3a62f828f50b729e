"""gunicorn's threaded worker with the limits a model server needs against ordinary abuse.

gunicorn 27's `gthread` worker already keeps a connection that has sent nothing off its threads
(workers/gthread.py, `wait_for_data`), but once a client has sent a first byte a thread reads its
headers and body with no time limit: a few clients trickling bytes hold every thread, and the
liveness probe (GET /) then waits behind them. This worker adds:

- a deadline for the request line and headers (HEADER_SECONDS from the first byte) and one for
  the body (BODY_SECONDS): a client that has not sent them by then is answered 408 or dropped;
- a body size limit (MAX_BODY_BYTES, declared or streamed): 413, before the app reads anything;
- no lingering on the worker's main loop for a client it cut off (see finish_request).

The body is read here, within its deadline, and handed to the app from memory, so the app (and
score.py) never waits on the network. Both deadlines are well under the probes' windows (the
Kubernetes readiness probe fails after 3 x 10 s, the image's HEALTHCHECK after 3 x 10 s).
Copied into the image beside score.py; gunicorn imports it with --chdir to that folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# Tests shorten the deadlines through these variables; the image never sets them.
HEADER_SECONDS = float(os.environ.get("EDGE_SERVING_HEADER_SECONDS", "5"))
BODY_SECONDS = float(os.environ.get("EDGE_SERVING_BODY_SECONDS", "10"))
MAX_BODY_BYTES = 8 * 1024 * 1024


class DeadlineSocket:
    """The connection's socket, whose blocking reads end at `deadline` (monotonic) when one is set."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None
        self.expired = False
        """The client missed a deadline or was refused: close without lingering for it."""

    def recv(self, size: int, *flags: int) -> bytes:
        # gunicorn's reader (http/unreader.py SocketUnreader) reads with recv only.
        if self.deadline is None or self._sock.gettimeout() == 0.0:  # non-blocking: the poller's probe
            return self._sock.recv(size, *flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError("the client did not send the request in time")
        previous = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            self.expired = True
            raise
        finally:
            self._sock.settimeout(previous)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _refuse(conn: Any, status: str, message: str) -> None:
    conn.sock.expired = True
    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):  # the client is gone: nothing to tell it
        conn.sock.sendall(head.encode() + body)


class DeadlineThreadWorker(ThreadWorker):
    def finish_request(self, conn: Any, fs: Any) -> None:
        # gunicorn closes a finished connection "gracefully" on its main loop: it half-closes and
        # waits up to 2 s for the client to close (util.close_graceful). A client that missed its
        # deadline would hold the whole worker's loop that long, one after the other: close it now.
        if getattr(conn.sock, "expired", False) and not fs.cancelled() and fs.exception() is None and not fs.result():
            self.nr_conns -= 1
            util.close(conn.sock)
            return
        super().finish_request(conn, fs)

    def handle(self, conn: Any) -> Any:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)
        conn.sock.deadline = time.monotonic() + HEADER_SECONDS
        try:
            return super().handle(conn)
        finally:
            conn.sock.deadline = None

    def handle_request(self, req: Any, conn: Any) -> bool:
        declared = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), None)
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            _refuse(conn, "413 Content Too Large", f"the body is larger than {MAX_BODY_BYTES} bytes")
            return False
        conn.sock.deadline = time.monotonic() + BODY_SECONDS
        try:
            body = req.body.read(MAX_BODY_BYTES + 1)
        except TimeoutError:
            _refuse(conn, "408 Request Timeout", f"the body did not arrive within {BODY_SECONDS:.0f} s")
            return False
        finally:
            conn.sock.deadline = None
        if len(body) > MAX_BODY_BYTES:
            _refuse(conn, "413 Content Too Large", f"the body is larger than {MAX_BODY_BYTES} bytes")
            return False
        req.body = io.BytesIO(body)
        return bool(super().handle_request(req, conn))
