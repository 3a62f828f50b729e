"""A local HTTPS endpoint on 127.0.0.1 that answers like Resource Manager, for the real
azure-core client: it records every request and plays scripted responses."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

from tests.harness.private_ca import make_private_ca

TEST_TOKEN = "test-bearer-token-edge-training"
TEST_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
# The audience a sovereign cloud's metadata names: a token scoped to public Azure would not do.
SOVEREIGN_AUDIENCE = "https://management.core.usgovcloudapi.net/"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    """Sent as is instead of `body` as JSON (with `headers`' Content-Type, if any): untidy answers."""
    delay_s: float = 0.0
    """Held this long before the status line: a slow service."""
    trickle_s: float = 0.0
    """The body sent one byte at a time, this long apart: a body that never trips a per-read timeout."""
    stall_at: int | None = None
    """With `trickle_s`: after this many bytes the body stops for a minute (the client must give up)."""


class FakeArm:
    """Scripted replies per (method, path), consumed in order; the last one repeats."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: dict[tuple[str, str], list[Reply]] = {}
        self._patterns: list[tuple[str, re.Pattern[str], list[Reply]]] = []
        self._lock = threading.Lock()

    def script(self, method: str, path: str, *replies: Reply) -> None:
        self._script[(method, path)] = list(replies)

    def script_matching(self, method: str, pattern: str, *replies: Reply) -> None:
        """For paths with names the client makes up (content hashes): a regular expression."""
        self._patterns.append((method, re.compile(pattern), list(replies)))

    def reply(self, method: str, path: str) -> Reply:
        with self._lock:
            queue = self._script.get((method, path))
            if queue is None:
                queue = next((q for m, rx, q in self._patterns if m == method and rx.fullmatch(path)), None)
            if not queue:
                return Reply(404, {"error": {"code": "NotScripted", "message": f"{method} {path}"}})
            return queue.pop(0) if len(queue) > 1 else queue[0]


class StaticCredential:
    """A TokenCredential handing out one fake token."""

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken(TEST_TOKEN, 4102444800)


class RecordingTransport(RequestsTransport):
    """The real requests transport, except that retry waits are recorded instead of slept."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slept: list[float] = []

    def sleep(self, duration: float) -> None:
        self.slept.append(duration)


@dataclass(frozen=True)
class ArmEndpoint:
    url: str
    ca_file: Path
    fake: FakeArm

    def transport(self) -> RecordingTransport:
        return RecordingTransport(connection_verify=str(self.ca_file))


def _body(raw: bytes, content_type: str) -> Any:
    """JSON bodies parsed; a form (a token request) as its fields; anything else as text."""
    if not raw:
        return None
    if "application/x-www-form-urlencoded" in content_type:
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


Respond = Callable[[str, str, dict[str, str], bytes], Reply]
"""(method, path with query, lower-cased headers, raw body) -> the reply."""


@contextmanager
def https_server(directory: Path, respond: Respond, name: str) -> Iterator[tuple[str, Path]]:
    """A threaded HTTPS server on 127.0.0.1 with a certificate from a private CA of its own (as an
    operator's PKI signs a Hub's endpoints), answering every request with `respond`; yields its
    URL and the CA's certificate to trust. Stopped, and checked gone, on exit."""
    pki = make_private_ca(directory / f"{name}-pki")
    # Where tests that serve a raw answer under the same certificate find it (test_attach_adversarial).
    shutil.copyfile(pki.server_cert, directory / "arm.crt")
    shutil.copyfile(pki.server_key, directory / "arm.key")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            reply = respond(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
            # hub_arm.py's Reply has only status, body and headers.
            delay_s, raw_body = getattr(reply, "delay_s", 0.0), getattr(reply, "raw", None)
            trickle_s, stall_at = getattr(reply, "trickle_s", 0.0), getattr(reply, "stall_at", None)
            if delay_s:
                time.sleep(delay_s)
            if raw_body is not None:
                payload = raw_body
            else:
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for header, value in reply.headers.items():
                self.send_header(header, value)
            if payload and raw_body is None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not trickle_s:
                self.wfile.write(payload)
                return
            try:
                for i in range(len(payload)):
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
                    time.sleep(60 if i + 1 == stall_at else trickle_s)
            except OSError:
                pass  # the client gave up on the body, as it should

        do_GET = do_PUT = do_DELETE = do_POST = _handle

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", pki.ca_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive(), f"the {name} server did not stop"


@contextmanager
def serve_arm(directory: Path) -> Iterator[ArmEndpoint]:
    fake = FakeArm()

    def respond(method: str, raw_path: str, headers: dict[str, str], raw: bytes) -> Reply:
        url = urlsplit(raw_path)
        body = _body(raw, headers.get("content-type", ""))
        fake.requests.append(Recorded(method, url.path, parse_qs(url.query), headers, body))
        return fake.reply(method, url.path)

    with https_server(directory, respond, "fake-arm") as (url, ca_file):
        yield ArmEndpoint(url, ca_file, fake)
