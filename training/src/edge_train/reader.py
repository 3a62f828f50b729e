"""Blob GETs and listings for staging, straight over libcurl (transport.py).

Why not `ContainerClient.download_blob`: on this project's 2-core machine the SDK spends about
2 ms of CPU per GET (a dozen pipeline policies, requests, header deserialisation into
BlobProperties), serialised by the GIL. Why not urllib3 either: a small GET over it still costs
about 0.9 ms (urllib3, http.client and its `email` header parser); libcurl parses the response in
C and releases the GIL for the exchange, about a quarter of that (bench/stage_blobs.py, and the
figures in docs/develop/benchmarks-and-suite.md). Staging many small blobs is bound by exactly
that CPU. Listing goes the same way: List Blobs, one request per 5,000 blobs.

What the SDK did for these GETs, and this module does too:
- Authorization the way an Azure Stack Hub accepts it: Shared Key (the account key of a connection
  string), signed as Microsoft's "Authorize with Shared Key" page specifies, or a SAS token in the
  query string. A Hub's storage has no Microsoft Entra ID authorization ("Azure Stack Hub storage:
  Differences and considerations"), so a client with any other credential is refused up front.
  https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key
  https://learn.microsoft.com/azure-stack/user/azure-stack-acs-differences
- The container client's API version on every request (the Hub's, see credentials.py).
- The listed version only: If-Match with the listed ETag (412 if the blob was rewritten), and an
  answer carrying another ETag is refused before its body is read.
- Retries of what may pass (connection failures, timeouts, a body cut short of its own
  Content-Length, 408/429/500/502/503/504) a few times with a short backoff, Retry-After honoured
  up to a cap; the wait ends early when the run stops.
- One deadline per request, its retries and its body included (`REQUEST_DEADLINE_S`): each
  attempt is given only what is left of it, all in (libcurl's TIMEOUT_MS), so a body trickled one
  byte at a time fails at the deadline instead of resetting a per-read timeout forever; a transfer
  that moves no byte for `READ_TIMEOUT_S` fails sooner (and may be retried); a Retry-After that
  would end past the deadline is not waited for. The same rule as clients/deadline.py, written
  again here because edge_train ships alone into jobs and imports nothing of the deployment's code.
- Nothing believed unchecked: a GET's body is exactly as long as asked (the listed size, or the
  range). A Content-Length that says otherwise is refused before the body is read, a body that
  runs past it is cut off as it arrives (never buffered whole), and one that ends short is an
  error. The body is written into one buffer of the expected size as it arrives, not collected
  and copied. A listing is XML with sane sizes, at most `MAX_PAGES` pages within
  `LIST_DEADLINE_S`, and a NextMarker seen before (a loop) is an error.
- TLS verified against $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE (a Hub's own CA) or certifi's
  bundle, as requests does, and nothing else (a certificate it does not vouch for fails at once,
  named CERTIFICATE_VERIFY_FAILED, and is not retried); the environment's proxy for the
  account's host as requests would choose it, NO_PROXY honoured, decided once here and not again
  by libcurl.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import random
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

from .deadline import Deadline, next_wait
from .transport import CurlPool, TransportError
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
REFUSAL_BYTES = 64 * 1024
"""Of a refusal's body, what is kept to find its <Message>; the rest is read and dropped."""
_CLOCK_SLACK_S = 0.05  # libcurl's timeout, set to what was left, fires about when the deadline ends
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
        proxy = _proxy_for(container_url)
        tls = parts.scheme == "https" or (proxy or "").startswith("https:")
        self._ca_bundle = _ca_bundle() if tls else None
        self._pool = CurlPool(
            connections=connections,
            ca_bundle=self._ca_bundle,
            proxy=proxy,
            connect_timeout_s=CONNECT_TIMEOUT_S,
            stall_s=READ_TIMEOUT_S,
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
    ) -> bytes | bytearray:
        """The blob's bytes (or `length` of them from `offset`) exactly at `etag`; a set `stop`
        abandons the retries. With a `length`, a bytearray filled in place (no copy of the body)."""
        headers = {"If-Match": etag}
        if length is not None:
            headers["x-ms-range"] = f"bytes={offset}-{offset + length - 1}"
        return self._send(f"{self._path}/{quote(name, safe='/~')}", {}, headers, length, stop)

    def get_whole(self, blob: ListedBlob, stop: threading.Event | None = None) -> bytes | bytearray:
        """All of `blob` at its listed ETag, exactly its listed size long (a bytearray filled in
        place, no copy of the body)."""
        headers = {"If-Match": blob.etag}
        return self._send(f"{self._path}/{quote(blob.name, safe='/~')}", {}, headers, blob.size, stop)

    def close(self) -> None:
        self._pool.close()

    def _send(
        self,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        length: int | None = None,
        stop: threading.Event | None = None,
        deadline: Deadline | None = None,
    ) -> bytes | bytearray:
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
    ) -> bytes | bytearray:
        answer = _Answer(length, headers.get("If-Match"))
        try:
            self._pool.get(
                self._url(path, query),
                self._signed(path, query, headers),
                timeout_s=deadline.remaining(),
                on_header=answer.header_line,
                on_body=answer.body_piece,
            )
        except TransportError as error:
            if answer.refused is not None:
                raise answer.refused from None  # a check of ours stopped the transfer
            if error.timed_out and answer.status is not None and deadline.remaining() <= _CLOCK_SLACK_S:
                raise BlobReadError(
                    0,
                    "Timeout",
                    f"the body was still arriving at the {deadline.seconds:g}s deadline ({answer.received} bytes)",
                ) from None
            if error.untrusted:
                # Not retried: the certificate will not change within the deadline. Worded as
                # Python's ssl module words it, so one search finds it in every client's log.
                raise BlobReadError(
                    0,
                    "CertificateVerifyFailed",
                    f"CERTIFICATE_VERIFY_FAILED: {_first_line(error)} (trusting {self._ca_bundle})",
                ) from None
            # Connection, TLS, a stall, no answer by the deadline, a body short of its own
            # Content-Length: what may pass on another attempt while time is left.
            code = "Timeout" if error.timed_out else "TransportError"
            raise _Retryable(BlobReadError(0, code, _first_line(error))) from None
        return answer.result()

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


class _Answer:
    """One response as libcurl hands it over: header lines, then body pieces. Its checks run as
    it arrives, and stop the transfer (the callback returns -1) with `refused` set."""

    def __init__(self, length: int | None, if_match: str | None) -> None:
        self.length, self.if_match = length, if_match
        self.status: int | None = None
        """The final response's status, once its whole head has arrived."""
        self.reason = ""
        self.headers: dict[str, str] = {}
        """Lower-case names."""
        self.received = 0
        self.refused: BlobReadError | None = None
        self._head: list[bytes] = []
        self._buffer: bytearray | None = None
        self._pieces: list[bytes] = []

    def header_line(self, line: bytes) -> int | None:
        # Called for every header line of every GET: the common case is kept to one test and an append.
        if len(line) > 2:  # a head ends with a bare CRLF (or LF)
            if line[:5] == b"HTTP/":
                self._head = [line]  # a new head: the final one follows any 1xx
            else:
                self._head.append(line)
            return None
        status_line = self._head[0].decode("latin-1").split(None, 2) if self._head else []
        if len(status_line) < 2 or not status_line[1].isdigit():
            return None  # libcurl itself refuses a response with no status line
        status = int(status_line[1])
        if status < 200:
            return None  # 100 Continue and the like: the final head is still to come
        self.status, self.reason = status, status_line[2].strip() if len(status_line) > 2 else ""
        for raw in self._head[1:]:
            name, colon, value = raw.decode("latin-1").partition(":")
            if colon:
                self.headers[name.strip().lower()] = value.strip()
        if status not in (200, 206):
            return None  # a refusal: its body is read for the message
        etag = self.headers.get("etag")
        if self.if_match is not None and _bare(etag) != _bare(self.if_match):
            self.refused = BlobChanged(
                status, "ETagMismatch", f"the answer carries ETag {etag!r}, not the {self.if_match!r} asked for"
            )
            return -1
        if self.length is not None:
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) != self.length:
                # Refused before the body is read: the connection is dropped with it.
                self.refused = BlobLengthMismatch(
                    status, "LengthMismatch", f"{declared} bytes where {self.length} were listed"
                )
                return -1
            self._buffer = bytearray(self.length)
        return None

    def body_piece(self, piece: bytes) -> int | None:
        start, self.received = self.received, self.received + len(piece)
        if self._buffer is not None:
            if self.received > len(self._buffer):
                self.refused = BlobLengthMismatch(
                    self.status or 0, "LengthMismatch", f"more than the {self.length} bytes listed"
                )
                return -1  # the transfer stops here: the rest is never read
            self._buffer[start : self.received] = piece
        elif self.status in (200, 206):
            self._pieces.append(piece)
        elif start < REFUSAL_BYTES:
            self._pieces.append(piece[: REFUSAL_BYTES - start])
        return None

    def result(self) -> bytes | bytearray:
        """The body of a complete exchange, or the error it amounts to."""
        status = self.status or 0
        if status not in (200, 206):
            refusal = _refusal(status, self.reason, self.headers, b"".join(self._pieces))
            if status in RETRY_STATUSES:
                raise _Retryable(refusal)
            raise refusal
        if self.length is not None and self.received != self.length:
            raise BlobLengthMismatch(status, "LengthMismatch", f"{self.received} bytes where {self.length} were listed")
        return self._buffer if self._buffer is not None else b"".join(self._pieces)


def _refusal(status: int, reason: str, headers: Mapping[str, str], body: bytes) -> BlobReadError:
    """A refusal as the service words it: x-ms-error-code, the body's <Message>, Retry-After
    (capped); `headers` with lower-case names."""
    code = headers.get("x-ms-error-code") or reason or ""
    found = _MESSAGE.search(body[:REFUSAL_BYTES].decode("utf-8", "replace"))
    message = found.group(1).strip() if found else (reason or "no message")
    kind = {412: BlobChanged, 404: BlobGone}.get(status, BlobReadError)
    return kind(status, code, message, _retry_after(headers.get("retry-after")))


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
