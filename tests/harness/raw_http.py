"""A loopback HTTP(S) server whose answers the test writes byte for byte: heads that lie about the
length, bodies trickled, cut short, chunked or endless. http.server writes a Content-Length of its
own and cannot send most of these.

Each connection is served on a thread of its own, request after request (keep-alive), until the
test's `answer` says to close. Everything listens on 127.0.0.1 and is stopped, and checked
stopped, when the `with` block ends.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


@dataclass(frozen=True)
class Request:
    head: bytes
    """The request line and headers, as received."""
    connection: socket.socket
    stop: threading.Event
    """Set when the server is closing: an answer that waits waits on this."""

    @property
    def target(self) -> str:
        return self.head.split(b" ", 2)[1].decode()


Answer = Callable[[Request], bool]
"""Writes the response to `request.connection`; True to keep the connection for another request."""


def response_head(status: int = 200, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status < 300 else 'Refused'}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawHttpServer:
    """`answer(request)` for every request; with `tls` (certificate, key), HTTPS."""

    def __init__(self, answer: Answer, tls: tuple[Path, Path] | None = None) -> None:
        self._answer = answer
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(*tls)
        self.connections = 0
        """TCP connections accepted."""
        self.requests: list[str] = []
        """Each request's target, in order."""
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="raw-http", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"{'https' if self._context else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # the listener was shut down: close() is under way
            with self._lock:
                if self.stop.is_set():
                    connection.close()
                    return
                self.connections += 1
                self._open.add(connection)
                thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        connection: socket.socket = raw
        try:
            if self._context is not None:
                connection = self._context.wrap_socket(raw, server_side=True)
            pending = b""
            while not self.stop.is_set():
                while b"\r\n\r\n" not in pending:
                    data = connection.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                request = Request(head, connection, self.stop)
                with self._lock:
                    self.requests.append(request.target)
                if not self._answer(request):
                    return
        except OSError:
            return  # the client went away (or failed the TLS handshake), or close() shut it
        finally:
            with contextlib.suppress(OSError):
                connection.close()
            with self._lock:
                self._open.discard(raw)

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._acceptor.join(5)
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv()
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
        assert not self._acceptor.is_alive() and not any(t.is_alive() for t in threads), "the server did not stop"

    def __enter__(self) -> RawHttpServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that only tunnels (CONNECT), to 127.0.0.1 only; records each
    CONNECT's target."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self._server = RawHttpServer(self._connect)

    @property
    def url(self) -> str:
        return self._server.url

    def _connect(self, request: Request) -> bool:
        method, target, _ = request.head.split(b" ", 2)
        host, _, port = target.decode().rpartition(":")
        if method != b"CONNECT" or host != "127.0.0.1":
            request.connection.sendall(response_head(405, {"Content-Length": "0"}))
            return False
        self.tunnels.append(target.decode())
        with socket.create_connection((host, int(port)), timeout=10) as upstream:
            request.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pump = threading.Thread(target=_copy, args=(upstream, request.connection), daemon=True)
            pump.start()
            _copy(request.connection, upstream)
            pump.join(5)
        return False

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
