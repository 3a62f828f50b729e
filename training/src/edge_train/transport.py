"""The reader's HTTP exchanges over libcurl (pycurl), which parses responses in C.

Why libcurl: on this project's 2-core machine a small GET over urllib3 costs about 0.9 ms of
client CPU (urllib3, http.client and its `email` header parser), serialised by the GIL; libcurl
does the exchange in C with the GIL released and calls back into Python only for header lines
and body pieces (bench/stage_blobs.py; figures in docs/develop/benchmarks-and-suite.md).

This module owns how a request goes over the wire, so that no guarantee depends on libcurl's
defaults or on its own reading of the environment (every option below is one of
https://curl.se/libcurl/c/curl_easy_setopt.html):
- TLS verified against the one CA bundle the reader names (CAINFO, PROXY_CAINFO; CAPATH and
  PROXY_CAPATH unset so no other store is trusted), peer and host name checked.
- The proxy the reader chose, or none: an empty PROXY disables libcurl's own look-up of
  http_proxy/HTTPS_PROXY/ALL_PROXY, and an empty NOPROXY its reading of NO_PROXY, so the reader's
  single decision (requests' rules) is the only one. Through a proxy, https goes in a CONNECT
  tunnel and http as an absolute URI, as urllib3's ProxyManager did.
- Time: each exchange ends by `timeout_s` all in (TIMEOUT_MS; the reader passes what is left of
  the request's deadline), connecting by `connect_timeout_s`, and a transfer that moves no byte
  for `stall_s` fails (LOW_SPEED_LIMIT 1 byte/s over LOW_SPEED_TIME; libcurl averages the speed
  over its last few seconds, so a stall just after bytes arrived is noticed up to ~4 s later).
- The path as signed (PATH_AS_IS: no dot-segment squashing), http and https only, no redirects,
  HTTP/1.1 (libcurl would offer HTTP/2 over TLS), no content decoding (the stored bytes, as
  listed), NOSIGNAL (threads: timeouts must not use SIGALRM).
- Kept-alive connections: at most `connections` idle handles, each keeping its one connection;
  a handle serves one thread at a time (libcurl's rule for an easy handle).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping

import pycurl

# CURLOPT_SUPPRESS_CONNECT_HEADERS (libcurl >= 7.54.0) is CURLOPTTYPE_LONG + 265; pycurl 7.49
# passes it through but names no constant for it. Without it a proxy's answer to CONNECT reaches
# the header callback as if it were the response's own head.
_SUPPRESS_CONNECT_HEADERS = getattr(pycurl, "SUPPRESS_CONNECT_HEADERS", 265)
_MAX_STALL_S = 2**31 - 1


class TransportError(Exception):
    """An exchange that got no complete answer: connection, TLS, timeout, a short body, or a
    callback that asked to stop. `curl_code` is libcurl's CURLcode."""

    def __init__(self, curl_code: int, message: str) -> None:
        super().__init__(message or f"libcurl error {curl_code}")
        self.curl_code = curl_code

    @property
    def timed_out(self) -> bool:
        return self.curl_code == pycurl.E_OPERATION_TIMEDOUT

    @property
    def untrusted(self) -> bool:
        """The peer's certificate is not vouched for by the bundle (or names another host), or the
        bundle cannot be read: CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE."""
        return self.curl_code in (pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE)


class CurlPool:
    """GETs on kept-alive libcurl handles: at most `connections` idle ones are kept."""

    def __init__(
        self,
        *,
        connections: int,
        ca_bundle: str | None,
        proxy: str | None,
        connect_timeout_s: float,
        stall_s: float,
    ) -> None:
        self._idle: queue.LifoQueue[pycurl.Curl] = queue.LifoQueue(maxsize=max(1, connections))
        self._ca_bundle, self._proxy = ca_bundle, proxy
        self._connect_timeout_s = connect_timeout_s
        self._stall_s = min(_MAX_STALL_S, max(1, round(stall_s)))  # LOW_SPEED_TIME is whole seconds
        self._closed = threading.Event()

    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float,
        on_header: Callable[[bytes], int | None],
        on_body: Callable[[bytes], int | None],
    ) -> None:
        """One GET, its response handed line by line to `on_header` and piece by piece to
        `on_body` (either returns -1 to abort the transfer); done by `timeout_s` all in.
        TransportError if no complete answer came back."""
        try:
            handle = self._idle.get_nowait()
        except queue.Empty:
            handle = self._handle()
        # 0 means "no timeout" to libcurl: at least a millisecond, so an exhausted deadline fails.
        total_ms = max(1, int(timeout_s * 1000))
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
            handle.setopt(pycurl.TIMEOUT_MS, total_ms)
            handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, min(int(self._connect_timeout_s * 1000), total_ms)))
            handle.setopt(pycurl.HEADERFUNCTION, on_header)
            handle.setopt(pycurl.WRITEFUNCTION, on_body)
            handle.perform()
        except pycurl.error as error:
            handle.close()  # whatever its connection's state, it is not reused
            code, message = error.args if len(error.args) == 2 else (0, str(error))
            raise TransportError(code, message) from None
        # The callbacks hold the caller's buffers: dropped now, not when the handle is next used.
        handle.setopt(pycurl.HEADERFUNCTION, _ignore)
        handle.setopt(pycurl.WRITEFUNCTION, _ignore)
        self._give_back(handle)

    def close(self) -> None:
        """Close the idle handles; a handle in use is closed when its request ends."""
        self._closed.set()
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _give_back(self, handle: pycurl.Curl) -> None:
        if self._closed.is_set():
            handle.close()
            return
        try:
            self._idle.put_nowait(handle)
        except queue.Full:
            handle.close()

    def _handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        # CURLOPT_PROTOCOLS is deprecated (7.85) for PROTOCOLS_STR, which pycurl 7.49 does not
        # name; libcurl still honours it ('Protocol "file" is disabled').
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.PATH_AS_IS, 1)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.HTTP_CONTENT_DECODING, 0)
        # One connection per handle: the pool's size is the number of connections kept.
        handle.setopt(pycurl.MAXCONNECTS, 1)
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, self._stall_s)
        handle.setopt(pycurl.SSL_VERIFYPEER, 1)
        handle.setopt(pycurl.SSL_VERIFYHOST, 2)
        handle.setopt(pycurl.PROXY_SSL_VERIFYPEER, 1)
        handle.setopt(pycurl.PROXY_SSL_VERIFYHOST, 2)
        if self._ca_bundle:
            handle.setopt(pycurl.CAINFO, self._ca_bundle)
            handle.setopt(pycurl.PROXY_CAINFO, self._ca_bundle)
        # The wheel's libcurl may have a CA directory compiled in: only the named bundle is trusted.
        handle.unsetopt(pycurl.CAPATH)
        handle.unsetopt(pycurl.PROXY_CAPATH)
        handle.setopt(pycurl.PROXY, self._proxy or "")
        handle.setopt(pycurl.NOPROXY, "")
        handle.setopt(_SUPPRESS_CONNECT_HEADERS, 1)
        return handle


def _ignore(_: bytes) -> None:
    return None
