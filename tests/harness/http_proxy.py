"""A small HTTP/1.1 forwarding proxy on 127.0.0.1, put in front of Azurite.

It records every request's method, path and headers as they cross the wire (what a real service
would see, after every SDK policy has run), and can hold each request for a fixed delay before
forwarding it, which is how the benchmarks model a Hub across a datacenter LAN: on bare loopback a
benchmark measures CPU, not the waiting that parallel downloads remove.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""


Refusal = tuple[int, str, str]
"""(status, x-ms-error-code, message): an answer in Azure Storage's own error format."""


class HttpProxy:
    """Forward to `upstream_port` on 127.0.0.1; `delay_s` before each request is forwarded.

    `on_request(method, path)` runs for each request before it is forwarded (it may act on the
    storage behind, e.g. rewrite a blob) and may return a Refusal to answer in the service's place.
    """

    def __init__(self, upstream_port: int, delay_s: float = 0.0) -> None:
        self.requests: list[RecordedRequest] = []
        self.on_request: Callable[[str, str], Refusal | None] | None = None
        self.connections = 0
        """TCP connections clients opened to the proxy."""
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream: http.client.HTTPConnection | None = None

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy.connections += 1

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                with proxy._lock:
                    proxy.requests.append(
                        RecordedRequest(self.command, self.path, {k.lower(): v for k, v in headers.items()})
                    )
                hook = proxy.on_request
                refusal = hook(self.command, self.path) if hook is not None else None
                if refusal is not None:
                    self._refuse(*refusal)
                    return
                if delay_s:
                    time.sleep(delay_s)  # the modelled network latency, per request
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                response = self.upstream.getresponse()
                payload = response.read()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _refuse(self, status: int, code: str, message: str) -> None:
                payload = (
                    '<?xml version="1.0" encoding="utf-8"?>'
                    f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
                ).encode()
                self.send_response_only(status)
                self.send_header("x-ms-error-code", code)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http-proxy", daemon=True)
        self._thread.start()

    def blob_endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.port}/{account}"

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> HttpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class Wire:
    """What crosses the wire between a client and Azurite, as `proxy` saw it; `on_request` runs
    before each request is forwarded and may act on storage or answer in the service's place."""

    def __init__(self, proxy: HttpProxy) -> None:
        self.proxy = proxy

    @property
    def gets(self) -> list[str]:
        """Paths (without the query) of the blob reads: every GET but the listings."""
        return [r.path.split("?")[0] for r in self.proxy.recorded() if r.method == "GET" and "comp=list" not in r.path]

    def clear(self) -> None:
        self.proxy.clear()

    @property
    def on_request(self) -> Callable[[str, str], Refusal | None] | None:
        return self.proxy.on_request

    @on_request.setter
    def on_request(self, hook: Callable[[str, str], Refusal | None] | None) -> None:
        """`hook(method, path)` sees the path without its query (no SAS signature in assertions)."""
        self.proxy.on_request = None if hook is None else (lambda method, path: hook(method, path.split("?")[0]))
