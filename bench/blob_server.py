"""An in-memory blob server on 127.0.0.1 that costs almost no CPU per request, for the benchmark.

    .venv/bin/python bench/blob_server.py [DELAY_MS]     # prints the port it listens on

Azurite spends about a millisecond of CPU per GET on this machine, on the cores the client
shares, so against it a benchmark of the client's concurrency measures the emulator. This server
keeps blobs in a dict and answers the few requests the benchmark sends (Create Container, Put
Blob, List Blobs, Get Blob with If-Match and a range) in a few tens of microseconds each; with
DELAY_MS it holds every response that long (a Hub across a LAN), without using CPU meanwhile.

It checks no signature (the benchmark measures the client, which signs as it would for a Hub),
but it refuses what the service would refuse in the paths it serves: a missing Authorization or
SAS (403), a wrong If-Match (412), an unknown blob or container (404), a range past the end (416).
One asyncio loop, HTTP/1.1 keep-alive, loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import itertools
import sys
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

LOOPBACK = "127.0.0.1"
PAGE_SIZE = 5000


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str
    md5: str
    modified: str


class Store:
    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Blob]] = {}
        self._etags = itertools.count(1)

    def put(self, container: str, name: str, data: bytes) -> Blob:
        blob = Blob(
            data,
            f'"0x8D{next(self._etags):013X}"',
            base64.b64encode(hashlib.md5(data).digest()).decode(),  # noqa: S324 (Content-MD5, as the service)
            email.utils.formatdate(usegmt=True),
        )
        self.containers[container][name] = blob
        return blob


def _listing(blobs: dict[str, Blob], query: dict[str, str]) -> bytes:
    prefix, marker = query.get("prefix", ""), query.get("marker", "")
    size = min(int(query.get("maxresults", PAGE_SIZE)), PAGE_SIZE)
    names = sorted(n for n in blobs if n.startswith(prefix) and n >= marker)
    page, rest = names[:size], names[size:]
    parts = ['<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>']
    for name in page:
        blob = blobs[name]
        parts.append(
            f"<Blob><Name>{escape(name)}</Name><Properties><Last-Modified>{blob.modified}</Last-Modified>"
            f"<Etag>{blob.etag}</Etag><Content-Length>{len(blob.data)}</Content-Length>"
            f"<Content-Type>application/octet-stream</Content-Type><Content-MD5>{blob.md5}</Content-MD5>"
            "<BlobType>BlockBlob</BlobType></Properties></Blob>"
        )
    parts.append(f"</Blobs><NextMarker>{escape(rest[0]) if rest else ''}</NextMarker></EnumerationResults>")
    return "".join(parts).encode()


def _response(status: int, reason: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "x-ms-version: 2019-07-07"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _error(status: int, reason: str, code: str) -> bytes:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{reason}</Message></Error>".encode()
    return _response(status, reason, {"x-ms-error-code": code, "Content-Type": "application/xml"}, body)


def handle(store: Store, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    if "authorization" not in headers and "sig" not in query:
        return _error(403, "Server failed to authenticate the request.", "AuthenticationFailed")
    _, _account, container, *rest = url.path.split("/", 3)
    name = unquote(rest[0]) if rest else ""
    if method == "PUT" and not name and query.get("restype") == "container":
        if container in store.containers:
            return _error(409, "The specified container already exists.", "ContainerAlreadyExists")
        store.containers[container] = {}
        return _response(201, "Created", {"ETag": '"0x1"', "Last-Modified": email.utils.formatdate(usegmt=True)})
    blobs = store.containers.get(container)
    if blobs is None:
        return _error(404, "The specified container does not exist.", "ContainerNotFound")
    if method == "PUT" and name:
        blob = store.put(container, name, body)
        return _response(201, "Created", {"ETag": blob.etag, "Last-Modified": blob.modified, "Content-MD5": blob.md5})
    if method == "GET" and not name and query.get("comp") == "list":
        return _response(200, "OK", {"Content-Type": "application/xml"}, _listing(blobs, query))
    if method != "GET" or not name:
        return _error(400, "The request is not one this server serves.", "UnsupportedHttpVerb")
    blob = blobs.get(name)
    if blob is None:
        return _error(404, "The specified blob does not exist.", "BlobNotFound")
    if headers.get("if-match", blob.etag) not in (blob.etag, "*"):
        return _error(412, "The condition specified using HTTP conditional header(s) is not met.", "ConditionNotMet")
    common = {
        "ETag": blob.etag,
        "Last-Modified": blob.modified,
        "Content-Type": "application/octet-stream",
        "Content-MD5": blob.md5,
        "x-ms-blob-type": "BlockBlob",
        "Accept-Ranges": "bytes",
    }
    wanted = headers.get("x-ms-range") or headers.get("range")
    if not wanted:
        return _response(200, "OK", common, blob.data)
    first, _, last = wanted.removeprefix("bytes=").partition("-")
    start, end = int(first), min(int(last) if last else len(blob.data) - 1, len(blob.data) - 1)
    if start >= len(blob.data) and blob.data:
        return _error(416, "The range specified is invalid for the current size of the resource.", "InvalidRange")
    common["Content-Range"] = f"bytes {start}-{end}/{len(blob.data)}"
    return _response(206, "Partial Content", common, blob.data[start : end + 1])


async def serve(delay_s: float) -> None:
    store = Store()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    if line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = handle(store, method, target, headers, body)
                if delay_s:
                    await asyncio.sleep(delay_s)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    server = await asyncio.start_server(connection, LOOPBACK, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    delay_ms = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(delay_ms / 1000))


if __name__ == "__main__":
    main()
