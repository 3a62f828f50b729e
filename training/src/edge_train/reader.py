"""Blob GETs for staging, straight over a urllib3 connection pool.

Why not `ContainerClient.download_blob`: on this project's 2-core machine the SDK spends about
2 ms of CPU per GET (a dozen pipeline policies, requests, header deserialisation into
BlobProperties), serialised by the GIL, while the same GET over urllib3 costs about 0.4 ms
(bench/stage_blobs.py, and the figures in docs/develop/benchmarks.md). Staging many small blobs is bound by
exactly that CPU. Listing stays on the SDK: one request per 5,000 blobs.

What the SDK did for these GETs, and this module does too:
- Authorization the way an Azure Stack Hub accepts it: Shared Key (the account key of a connection
  string), signed as Microsoft's "Authorize with Shared Key" page specifies, or a SAS token in the
  query string. A Hub's storage has no Microsoft Entra ID authorization ("Azure Stack Hub storage:
  Differences and considerations"), so a client with any other credential is refused up front.
  https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key
  https://learn.microsoft.com/azure-stack/user/azure-stack-acs-differences
- The container client's API version on every request (the Hub's, see credentials.py).
- The listed version only: If-Match with the listed ETag (412 if the blob was rewritten).
- Retries of what may pass (connection failures, timeouts, 408/429/500/502/503/504) a few times
  with a short backoff, Retry-After honoured up to a cap; the wait ends early when the run stops.
- One deadline per request, its retries and its body included (`REQUEST_DEADLINE_S`): every
  socket read waits at most what is left of it, so a body trickled one byte at a time fails at the
  deadline instead of resetting a per-read timeout forever; a Retry-After that would end past it is
  not waited for. The same rule as clients/deadline.py, written again here because edge_train
  ships alone into jobs and imports nothing of the deployment's code.
- Nothing believed unchecked: a GET's body is exactly as long as asked (the listed size, or the
  range), its ETag is the If-Match sent; a listing is XML with sane sizes, at most `MAX_PAGES` pages
  within `LIST_DEADLINE_S`, and a NextMarker seen before (a loop) is an error.
- TLS verified against $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE (a Hub's own CA) or certifi's
  bundle, as requests does; the environment's proxy for the account's host, NO_PROXY honoured.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import os
import random
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import urllib3

from .deadline import Deadline, next_wait
from .trust import trust_hub_ca

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

ATTEMPTS = 4
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_S = 0.5
RETRY_AFTER_CAP_S = 30.0
CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0
PAGE_SIZE = 5000  # the service's maximum per List Blobs page
REQUEST_DEADLINE_S = 300.0
"""One GET, its retries and its whole body: 8 MiB ranges and blobs under 32 MiB take seconds."""
LIST_DEADLINE_S = 1800.0
MAX_PAGES = 20_000
"""100 million blobs at 5,000 a page: a listing longer than that is a service gone wrong."""
MAX_BLOB_BYTES = 50_000 * 4000 * 1024 * 1024
"""A block blob's maximum, 50,000 blocks of 4,000 MiB (about 190.7 TiB; "Scalability and performance
targets for Blob storage"); a listing that claims more is not believed."""
BODY_CHUNK = 256 * 1024
_CLOCK_SLACK_S = 0.05  # a socket timeout set to what was left fires about when the deadline ends
_MESSAGE = re.compile(r"<Message>([^<\r\n]*)")


@dataclass(frozen=True)
class ListedBlob:
    """What a listing says of a blob, and all that staging needs of it."""

    name: str
    etag: str
    size: int
    content_md5: bytes | None


class BlobReadError(Exception):
    """A GET that failed for good; `status` is 0 when no HTTP answer came back, `retry_after`
    the service's Retry-After (capped) when it sent one."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else message)
        self.status, self.code, self.retry_after = status, code, retry_after


class BlobChanged(BlobReadError):
    """412: the blob no longer has the listed ETag."""


class BlobGone(BlobReadError):
    """404: the blob was deleted after it was listed."""


class BlobLengthMismatch(BlobReadError):
    """The body is not as long as the listing (or the range) said: never staged as the blob."""


class UnsupportedCredential(ValueError):
    pass


class _Retryable(Exception):
    def __init__(self, error: BlobReadError) -> None:
        super().__init__(str(error))
        self.error = error


class BlobReader:
    """GETs of one container's blobs on a pool of `connections` kept-alive connections."""

    def __init__(
        self,
        container_url: str,
        *,
        api_version: str,
        account_name: str,
        account_key: str | None = None,
        sas_token: str | None = None,
        connections: int = 16,
    ) -> None:
        if (account_key is None) == (sas_token is None):
            raise UnsupportedCredential("a blob reader needs exactly one of an account key and a SAS token")
        parts = urlsplit(container_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path.rstrip("/")
        self._account = account_name
        try:
            self._key = base64.b64decode(account_key, validate=True) if account_key is not None else None
        except ValueError:  # the message says what the key is not, never what it is
            raise UnsupportedCredential("the storage account key is not base64, as Azure gives it") from None
        self._sas = sas_token.lstrip("?") if sas_token is not None else None
        self._version = api_version
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        options: dict[str, Any] = {"maxsize": max(1, connections), "retries": False, "timeout": self._timeout}
        if parts.scheme == "https":
            options |= {"cert_reqs": "CERT_REQUIRED", "ca_certs": _ca_bundle()}
        proxy = _proxy_for(container_url)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, num_pools=1, **options)
            if proxy
            else urllib3.PoolManager(num_pools=1, **options)
        )

    @classmethod
    def for_container(cls, container: ContainerClient, connections: int) -> BlobReader:
        """The reader for what `container` reads: its URL, API version and credential."""
        url, _, query = container.url.partition("?")
        credential = container.credential  # the SDK's shared-key policy, or None with a SAS in the URL
        key = getattr(credential, "account_key", None)
        if isinstance(key, str) and key:
            return cls(
                url,
                api_version=container.api_version,
                account_name=getattr(credential, "account_name", None) or container.account_name,
                account_key=key,
                connections=connections,
            )
        if credential is None and "sig=" in query:
            return cls(
                url,
                api_version=container.api_version,
                account_name=container.account_name or "",
                sas_token=query,
                connections=connections,
            )
        raise UnsupportedCredential(
            "staging reads with a storage account key or a SAS token, the two an Azure Stack Hub accepts; "
            f"this client has {type(credential).__name__}"
        )

    def list_blobs(self, prefix: str) -> Iterator[ListedBlob]:
        """Every blob whose name starts with `prefix`, page by page, in name order (List Blobs);
        at most `MAX_PAGES` pages by `LIST_DEADLINE_S`, and no marker twice."""
        marker = ""
        seen: set[str] = set()
        deadline = Deadline(LIST_DEADLINE_S)
        for _ in range(MAX_PAGES):
            query = {"restype": "container", "comp": "list", "maxresults": str(PAGE_SIZE)}
            if prefix:
                query["prefix"] = prefix
            if marker:
                query["marker"] = marker
            body = self._send(self._path, query, {}, deadline=deadline)
            # ElementTree resolves no external entities, and expat >= 2.4.1 (CPython 3.11 bundles
            # 2.5+) refuses entity-expansion bombs: https://docs.python.org/3/library/xml.html#xml-vulnerabilities
            try:
                page = ElementTree.fromstring(body)  # noqa: S314
            except ElementTree.ParseError as error:
                raise BlobReadError(
                    0, "MalformedListing", f"the listing is not XML ({len(body)} bytes: {error})"
                ) from None
            if page.tag != "EnumerationResults":
                raise BlobReadError(
                    0, "MalformedListing", f"the listing's root is <{page.tag}>, not <EnumerationResults>"
                )
            for blob in page.iter("Blob"):
                yield _listed(blob)
            marker = page.findtext("NextMarker") or ""
            if not marker:
                return
            if marker in seen:
                raise BlobReadError(
                    0, "MalformedListing", f"the listing repeats its NextMarker {marker[:80]!r}: a loop"
                )
            seen.add(marker)
        raise BlobReadError(0, "MalformedListing", f"the listing goes on past {MAX_PAGES} pages")

    def get(
        self,
        name: str,
        etag: str,
        offset: int = 0,
        length: int | None = None,
        stop: threading.Event | None = None,
    ) -> bytes:
        """The blob's bytes (or `length` of them from `offset`) exactly at `etag`; a set `stop`
        abandons the retries."""
        headers = {"If-Match": etag}
        if length is not None:
            headers["x-ms-range"] = f"bytes={offset}-{offset + length - 1}"
        return self._send(f"{self._path}/{quote(name, safe='/~')}", {}, headers, length, stop)

    def get_whole(self, blob: ListedBlob, stop: threading.Event | None = None) -> bytes:
        """All of `blob` at its listed ETag, exactly its listed size long."""
        headers = {"If-Match": blob.etag}
        return self._send(f"{self._path}/{quote(blob.name, safe='/~')}", {}, headers, blob.size, stop)

    def close(self) -> None:
        self._pool.clear()

    def _send(
        self,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        length: int | None = None,
        stop: threading.Event | None = None,
        deadline: Deadline | None = None,
    ) -> bytes:
        """`length`: the exact body length expected (a range's, or the listed size)."""
        request_deadline = Deadline(REQUEST_DEADLINE_S)
        if deadline is None or deadline.remaining() > request_deadline.remaining():
            deadline = request_deadline
        failure = BlobReadError(0, "NotAttempted", "the run stopped before the first attempt")
        for attempt in range(ATTEMPTS):
            if attempt and _back_off(stop, failure, attempt, deadline):
                break  # another download failed, or the deadline leaves no time: abandoned
            if deadline.remaining() <= 0:
                break
            try:
                return self._attempt(path, query, headers, length, deadline)
            except _Retryable as retry:
                failure = retry.error
        raise failure

    def _attempt(
        self, path: str, query: dict[str, str], headers: dict[str, str], length: int | None, deadline: Deadline
    ) -> bytes:
        left = deadline.remaining()
        timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, left), read=min(READ_TIMEOUT_S, left))
        try:
            response = self._pool.urlopen(
                "GET",
                self._url(path, query),
                headers=self._signed(path, query, headers),
                preload_content=False,
                timeout=timeout,
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _Retryable(BlobReadError(0, type(error).__name__, _first_line(error))) from error
        try:
            if response.status not in (200, 206):
                refusal = _refusal(response)
                response.drain_conn()  # the connection goes back to the pool clean
                if response.status in RETRY_STATUSES:
                    raise _Retryable(refusal)
                raise refusal
            sent = headers.get("If-Match")
            if sent is not None and _bare(response.headers.get("ETag")) != _bare(sent):
                response.drain_conn()
                raise BlobChanged(
                    response.status,
                    "ETagMismatch",
                    f"the answer carries ETag {response.headers.get('ETag')!r}, not the {sent!r} asked for",
                )
            try:
                return _body(response, length, deadline)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise _Retryable(BlobReadError(0, type(error).__name__, _first_line(error))) from error
        finally:
            response.release_conn()

    def _url(self, path: str, query: dict[str, str]) -> str:
        parameters = [f"{k}={quote(v, safe='')}" for k, v in query.items()]
        if self._sas is not None:
            parameters.append(self._sas)
        return f"{self._origin}{path}?{'&'.join(parameters)}" if parameters else f"{self._origin}{path}"

    def _signed(self, path: str, query: dict[str, str], headers: dict[str, str]) -> dict[str, str]:
        headers = {**headers, "x-ms-version": self._version}
        if self._key is None:
            return headers  # the SAS in the URL authorises the request
        headers["x-ms-date"] = email.utils.formatdate(usegmt=True)
        ms_headers = sorted((k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-"))
        # VERB, then Content-Encoding ... Range in the documented order; of those a GET sets only If-Match.
        fields = ["GET", "", "", "", "", "", "", "", headers.get("If-Match", ""), "", "", ""]
        resource = f"/{self._account}{path}" + "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        to_sign = "\n".join(fields) + "\n" + "".join(f"{k}:{v}\n" for k, v in ms_headers) + resource
        digest = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self._account}:{base64.b64encode(digest).decode()}"
        return headers


def _bare(etag: str | None) -> str | None:
    """An ETag without quotes: List Blobs gives `0x8D...`, a GET's header `"0x8D..."`."""
    return etag.strip().strip('"') if etag is not None else None


def _listed(blob: ElementTree.Element) -> ListedBlob:
    name_element = blob.find("Name")
    name = name_element.text or "" if name_element is not None else ""
    if name_element is not None and name_element.get("Encoded") == "true":
        name = unquote(name)  # names with characters XML cannot carry come percent-encoded
    properties = blob.find("Properties")
    if properties is None:
        raise BlobReadError(0, "MalformedListing", f"blob {name!r} has no Properties in the listing")
    md5 = properties.findtext("Content-MD5")
    try:
        listed = ListedBlob(
            name=name,
            etag=properties.findtext("Etag") or "",
            size=int(properties.findtext("Content-Length") or ""),
            content_md5=base64.b64decode(md5) if md5 else None,
        )
    except ValueError as error:
        raise BlobReadError(0, "MalformedListing", f"blob {name!r}: {error}") from None
    if not 0 <= listed.size <= MAX_BLOB_BYTES:
        raise BlobReadError(
            0, "MalformedListing", f"blob {name!r} is listed at {listed.size} bytes, outside 0..{MAX_BLOB_BYTES}"
        )
    if not listed.etag:
        raise BlobReadError(0, "MalformedListing", f"blob {name!r} is listed without an ETag")
    return listed


def _body(response: urllib3.BaseHTTPResponse, length: int | None, deadline: Deadline) -> bytes:
    """The whole body by `deadline` (each socket read waits at most what is left), exactly `length`
    bytes when a length is expected; urllib3 also refuses a body shorter than its Content-Length."""
    if length is not None:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != length:
            response.close()  # its body unread: the connection never goes back to the pool
            raise BlobLengthMismatch(response.status, "LengthMismatch", f"{declared} bytes where {length} were listed")
    sock = _socket_of(response)
    chunks: list[bytes] = []
    received = 0

    def late(received: int) -> str:
        return f"the body was still arriving at the {deadline.seconds:g}s deadline ({received} bytes)"

    while True:
        left = deadline.remaining()
        if left <= 0:
            response.close()  # mid-body: the connection never goes back to the pool
            raise BlobReadError(0, "Timeout", late(received))
        if sock is not None:
            with contextlib.suppress(OSError):  # closed once the last byte came: read1 says so
                sock.settimeout(left)
        try:
            chunk = response.read1(BODY_CHUNK)
        except (urllib3.exceptions.HTTPError, OSError):
            if deadline.remaining() > _CLOCK_SLACK_S:
                raise
            response.close()
            raise BlobReadError(0, "Timeout", late(received)) from None
        if not chunk:
            break
        received += len(chunk)
        if length is not None and received > length:
            response.close()
            raise BlobLengthMismatch(response.status, "LengthMismatch", f"more than the {length} bytes listed")
        chunks.append(chunk)
    if length is not None and received != length:
        raise BlobLengthMismatch(response.status, "LengthMismatch", f"{received} bytes where {length} were listed")
    return b"".join(chunks)


def _socket_of(response: urllib3.BaseHTTPResponse) -> socket.socket | None:
    """The socket a response reads from: its kept-alive connection's, else http.client's own."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is None:
        reader = getattr(getattr(response, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _refusal(response: urllib3.BaseHTTPResponse) -> BlobReadError:
    code = response.headers.get("x-ms-error-code") or response.reason or ""
    try:
        text = response.read(64 * 1024).decode("utf-8", "replace")
    except (urllib3.exceptions.HTTPError, OSError):
        text = ""
    found = _MESSAGE.search(text)
    message = found.group(1).strip() if found else (response.reason or "no message")
    kind = {412: BlobChanged, 404: BlobGone}.get(response.status, BlobReadError)
    return kind(response.status, code, message, _retry_after(response.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), RETRY_AFTER_CAP_S) if value else None
    except ValueError:
        return None


def _back_off(
    stop: threading.Event | None, failure: BlobReadError, attempt: int, deadline: Deadline | None = None
) -> bool:
    """Back off before another attempt, by the deadline rule (deadline.py); True if the run stopped
    meanwhile, or if the deadline leaves no time to wait (a service's Retry-After is never cut short)."""
    backoff = BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
    if deadline is None:
        wait: float | None = backoff if failure.retry_after is None else failure.retry_after
    else:
        wait = next_wait(deadline, backoff, failure.retry_after)
    if wait is None:
        return True
    return (stop or threading.Event()).wait(wait)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _ca_bundle() -> str:
    trust_hub_ca()  # the Hub's CA from $EDGE_HUB_CA_FILE, next to certifi's (trust.py)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        return bundle
    import certifi

    return certifi.where()


def _proxy_for(url: str) -> str | None:
    """The proxy requests would use for `url` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), asked once."""
    import requests

    proxies = requests.utils.get_environ_proxies(url)
    return proxies.get(urlsplit(url).scheme) or proxies.get("all")
