"""One Resource Manager client on azure-core/azure-mgmt-core: GET, PUT and DELETE of one resource at
the API version the caller names, waiting out long-running operations, every call inside one
`Deadline` (clients/deadline.py).

Generic on purpose: it knows no cloud, no profile and no resource type. Callers pass the API
version of every request; the client adds none of its own. That is also why the pipeline is built
here policy by policy instead of from azure-mgmt-core's default configuration: the default adds
`ARMAutoResourceProviderRegistrationPolicy`, which answers a 409 MissingSubscriptionRegistration by
registering the provider at api-version 2016-02-01 (azure-mgmt-core, policies/_base.py), a version
the caller never chose and a cloud with a fixed profile (Azure Stack Hub) refuses.

Nothing is believed unchecked: a 200 or 201 must carry a JSON object; a DELETE follows Resource
Manager's contract (Azure/azure-resource-manager-rpc, v1.0/async-api-reference.md, "Delete Resource
Asynchronously" and "202 Accepted and Location Headers"): 200 deleted, 204 (or 404) there was
nothing to delete, 202 accepted, its Location or Azure-AsyncOperation polled and then the resource
read until it answers 404; anything else (409 included) is a failure. The bearer token goes to the
Resource Manager host only: the same document says a Location URI's host "must be the same as the
host in the referrer header", so a polling URL on another host is refused, never followed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy, RequestIdPolicy, UserAgentPolicy
from azure.core.pipeline.transport import HttpTransport
from azure.core.polling.base_polling import BadResponse, BadStatus, OperationFailed
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

from clients.cloud import CONNECT_TIMEOUT, READ_TIMEOUT, USER_AGENT, Cloud
from clients.deadline import (
    RETRY_AFTER_MAX,
    BodyDeadlinePolicy,
    Deadline,
    DeadlineExceeded,
    DeadlineRetryPolicy,
    next_wait,
    poll_until,
)

log = logging.getLogger(__name__)

RETRY_TOTAL = 4
# Between polls of a long-running operation: Retry-After when given (capped), else this.
POLL_INTERVAL = 5.0
# A whole long-running operation; VM creation on a busy Hub can take tens of minutes.
OPERATION_DEADLINE = 3600.0
# One GET, its retries included.
REQUEST_DEADLINE = 300.0
TERMINAL_STATES = frozenset({"Succeeded", "Failed", "Canceled"})
MESSAGE_LIMIT = 2000
STILL_RUNNING_HINT = "; it may yet finish: look at the resource in the portal before retrying"
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*-----.*?(-----END [A-Z0-9 ]*-----|$)", re.DOTALL)


def scrub(text: str, limit: int | None = MESSAGE_LIMIT) -> str:
    """A service's message fit for an error or a log: key material (PEM blocks) cut out, length
    bounded (`None`: not cut, for a caller that still has secrets of its own to find in it).
    Services quote requests back (a refused compute attach quotes its private key)."""
    text = _PEM.sub("[redacted key]", text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class ArmTimeouts:
    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT
    retry_after_max: float = RETRY_AFTER_MAX
    poll_interval: float = POLL_INTERVAL
    operation_deadline: float = OPERATION_DEADLINE
    request_deadline: float = REQUEST_DEADLINE


class ArmError(RuntimeError):
    """Resource Manager refused or failed a request: the HTTP status, ARM's error code and message."""

    def __init__(self, operation: str, status: int | None, code: str, message: str) -> None:
        # Not cut to length here: the Hub provider still replaces its own secrets in the whole text.
        code, message = scrub(code, 100), scrub(message, None)
        self.operation, self.status, self.code, self.message = operation, status, code, message
        where = f"HTTP {status}" if status else "no answer"
        super().__init__(f"{operation}: {where} {code}: {message}".rstrip(": "))


class ForeignHostRefused(RuntimeError):
    """A request (a polling URL a response named) for a host other than Resource Manager's."""


class _SameHostPolicy(HTTPPolicy):  # type: ignore[type-arg]
    """Before the bearer-token policy: nothing leaves for another host, so no token does."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self._origin = origin

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        parts = urlsplit(request.http_request.url)
        if f"{parts.scheme}://{parts.netloc}".lower() != self._origin:
            raise ForeignHostRefused(
                f"Resource Manager at {self._origin} named {parts.scheme}://{parts.netloc} to poll; "
                "a polling URL must be on Resource Manager's own host (ARM RPC, async-api-reference), "
                "and the token is for that host only: refused"
            )
        return self.next.send(request)


class _DeadlinePolling(ARMPolling):
    """ARMPolling (Azure-AsyncOperation, then Location, then the resource's provisioningState), run
    in the caller's thread and waiting by `next_wait`: Retry-After capped, our interval cut, and
    no wait past the deadline (DeadlineExceeded instead)."""

    def __init__(self, deadline: Deadline, interval: float, sleep: Callable[[float], None] | None) -> None:
        super().__init__(timeout=interval)
        self._deadline, self._interval, self._sleeper = deadline, interval, sleep
        self._polled = False

    def update_status(self) -> None:
        # azure-core polls the first time at once; ARM asks clients to wait the Retry-After (or
        # the default interval) first (async-api-reference, "202 Accepted and Location Headers").
        if not self._polled:
            self._polled = True
            self._delay()
        super().update_status()

    def _delay(self) -> None:
        retry_after = self._retry_after()
        wait = next_wait(self._deadline, self._interval, retry_after)
        if wait is None:
            status = getattr(self, "_status", None)
            raise DeadlineExceeded(
                f"still {status if status and status != 'InProgress' else 'running'} "
                f"at the {self._deadline.seconds:g}s deadline"
                + (f" (the service asked for Retry-After: {retry_after:g}s)" if retry_after is not None else "")
            )
        (self._sleeper or self._sleep)(wait)

    def _retry_after(self) -> float | None:
        headers = self._pipeline_response.http_response.headers
        for header, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
            if header in headers:
                try:
                    return float(headers[header]) * scale
                except ValueError:
                    return None  # an HTTP date: ARM sends seconds only (async-api-reference)
        return None


def _error_of(body: Any) -> tuple[str, str]:
    """ARM's error shape, `{"error": {"code", "message"}}`; an operation status nests it the same way.
    Only those two fields are ever quoted: a body without them may be the request echoed back."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("code") or "Unknown"), str(error.get("message") or "")
    return "Unknown", "the answer carries no ARM error object"


def _failure_of(resource: Mapping[str, Any]) -> tuple[str, str]:
    """A resource that ended Failed or Canceled: `Provisioning<state>` and the reasons it lists
    (`properties.provisioningErrors`, Azure ML's ErrorResponse list), else the ARM error it carries."""
    state = provisioning_state(resource)
    properties = resource.get("properties")
    errors = properties.get("provisioningErrors") if isinstance(properties, Mapping) else None
    reasons = [
        f"{entry['error'].get('code', '')}: {entry['error'].get('message', '')}"
        for entry in (errors if isinstance(errors, list) else [])
        if isinstance(entry, Mapping) and isinstance(entry.get("error"), Mapping)
    ]
    if not reasons and isinstance(resource.get("error"), Mapping):
        reasons = [": ".join(_error_of(resource))]
    return f"Provisioning{state}", "; ".join(reasons) or f"provisioningState is {state}; the service gave no reason"


def _json(response: Any) -> Any:
    try:
        return response.json() if response.text() else None
    except ValueError:
        return None


def _object(operation: str, response: Any) -> dict[str, Any]:
    """The body as the JSON object Resource Manager documents, or an ArmError that says what came."""
    content_type = response.headers.get("Content-Type", "")
    body = _json(response) if "json" in content_type.lower() else None
    if not isinstance(body, dict):
        raise ArmError(
            operation,
            response.status_code,
            "MalformedResponse",
            f"the answer is not a JSON object ({len(response.content or b'')} bytes, "
            f"Content-Type {content_type or 'none'!r})",
        )
    return body


def provisioning_state(body: Mapping[str, Any]) -> str | None:
    """`properties.provisioningState`, or None when the resource reports none."""
    properties = body.get("properties")
    state = properties.get("provisioningState") if isinstance(properties, Mapping) else None
    return str(state) if state is not None else None


class ArmClient:
    """Resource Manager of one cloud, signed in with `credential` for the cloud's own audience.

    Every call takes an optional `Deadline` (default: `timeouts.request_deadline` for a GET,
    `timeouts.operation_deadline` for a PUT or DELETE and its wait); its requests, their retries,
    their bodies and the polls between them all end by it. One client serves one thread at a time."""

    def __init__(
        self,
        cloud: Cloud,
        credential: TokenCredential,
        transport: HttpTransport | None = None,
        timeouts: ArmTimeouts = ArmTimeouts(),
        retry_total: int = RETRY_TOTAL,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        base = cloud.resource_manager.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme != "https":
            raise ValueError(f"{cloud.resource_manager!r} is not an https URL")
        self._base = base
        self._timeouts = timeouts
        self._sleep = sleep
        self._owns_transport = transport is None
        self._retry = DeadlineRetryPolicy(
            Deadline(timeouts.request_deadline),
            timeouts.connect,
            timeouts.read,
            retry_total=retry_total,
            retry_backoff_factor=0.8,
            retry_backoff_max=30,
        )
        policies = [
            RequestIdPolicy(),
            UserAgentPolicy(base_user_agent=USER_AGENT),
            self._retry,
            _SameHostPolicy(f"{parts.scheme}://{parts.netloc}".lower()),
            # Bearer token for the cloud's audience, renewed before expiry, with CAE challenges handled.
            ARMChallengeAuthenticationPolicy(credential, cloud.arm_scope),
            # Headers on an allow-list only, never bodies (a body can carry a VM's custom data).
            ARMHttpLoggingPolicy(),
            BodyDeadlinePolicy(),
        ]
        self._client = ARMPipelineClient(base_url=base, policies=policies, transport=transport)

    def __enter__(self) -> ArmClient:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_transport:  # a caller's transport stays open for its other users
            self._client.close()

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._client._pipeline._transport.sleep(seconds)  # the transport's own sleep

    def _send(
        self,
        method: str,
        path: str,
        api_version: str,
        deadline: Deadline,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> PipelineResponse[Any, Any]:
        params = {"api-version": api_version, **(query or {})}
        request = HttpRequest(method, f"{self._base}{path}", params=params, json=body)
        try:
            return self._client.send_request(request, _return_pipeline_response=True, deadline=deadline)
        except DeadlineExceeded as error:
            raise ArmError(f"{method} {path}", None, "DeadlineExceeded", str(error)) from None
        except AzureError as error:
            raise ArmError(f"{method} {path}", None, type(error).__name__, error.message) from None

    @staticmethod
    def _raise_for(operation: str, response: Any) -> None:
        code, message = _error_of(_json(response))
        raise ArmError(operation, response.status_code, code, message)

    def get(self, path: str, api_version: str, deadline: Deadline | None = None) -> dict[str, Any] | None:
        """The resource at `path`, or None when Resource Manager answers 404."""
        deadline = deadline or Deadline(self._timeouts.request_deadline)
        response = self._send("GET", path, api_version, deadline).http_response
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._raise_for(f"GET {path}", response)
        return _object(f"GET {path}", response)

    def put(
        self, path: str, api_version: str, body: Mapping[str, Any], deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """PUT `body` and wait until the operation ends; the resource as Resource Manager then has
        it. A provisioning that ends Failed or Canceled, or still runs at the deadline, is an ArmError."""
        operation = f"PUT {path}"
        deadline = deadline or Deadline(self._timeouts.operation_deadline)
        pipeline_response = self._send("PUT", path, api_version, deadline, dict(body))
        response = pipeline_response.http_response
        if response.status_code not in (200, 201, 202):
            self._raise_for(operation, response)
        # Finished already only when nothing says otherwise: a 201 may carry an operation to follow
        # even without a provisioningState in its body.
        announced = any(h in response.headers for h in ("Azure-AsyncOperation", "Location"))
        if response.status_code in (200, 201):
            resource = _object(operation, response)
            settled = provisioning_state(resource) in (None, *TERMINAL_STATES)
            if settled and not (response.status_code == 201 and announced):
                return self._settled(operation, response.status_code, resource)
        result = self._follow(operation, pipeline_response, deadline)
        if not isinstance(result, dict):
            result = self.get(path, api_version, deadline)
            if result is None:
                raise ArmError(operation, 404, "ResourceNotFound", "the operation ended but the resource is not there")
        return self._settled(operation, None, result)

    def post(self, path: str, api_version: str, deadline: Deadline | None = None) -> dict[str, Any]:
        """POST an action without a body (e.g. a storage account's listKeys); its answer, a JSON object."""
        operation = f"POST {path}"
        deadline = deadline or Deadline(self._timeouts.request_deadline)
        response = self._send("POST", path, api_version, deadline).http_response
        if response.status_code != 200:
            self._raise_for(operation, response)
        return _object(operation, response)

    @staticmethod
    def _settled(operation: str, status: int | None, resource: dict[str, Any]) -> dict[str, Any]:
        if provisioning_state(resource) not in (None, "Succeeded"):
            raise ArmError(operation, status, *_failure_of(resource))
        return resource

    def delete(
        self,
        path: str,
        api_version: str,
        deadline: Deadline | None = None,
        query: Mapping[str, str] | None = None,
    ) -> bool:
        """DELETE and wait until the resource is gone. False when there was nothing to delete.
        `query`: the resource type's own parameters (a compute's `underlyingResourceAction`)."""
        operation = f"DELETE {path}"
        deadline = deadline or Deadline(self._timeouts.operation_deadline)
        pipeline_response = self._send("DELETE", path, api_version, deadline, query=query)
        response = pipeline_response.http_response
        if response.status_code in (204, 404):
            return False
        if response.status_code == 200:
            return True
        if response.status_code != 202:
            self._raise_for(operation, response)  # 409: a conflict left the resource in place
        announced = any(h in response.headers for h in ("Azure-AsyncOperation", "Location"))
        if announced:
            self._follow(operation, pipeline_response, deadline)
        gone = poll_until(
            lambda: True if self.get(path, api_version, deadline) is None else None,
            deadline,
            self._timeouts.poll_interval,
            self._wait,
            wait_first=not announced,  # after the operation ended, one read at once
        )
        if gone is None:
            still = f"the resource is still there at the {deadline.seconds:g}s deadline"
            raise ArmError(operation, None, "OperationTimedOut", still)
        return True

    def _follow(self, operation: str, initial: PipelineResponse[Any, Any], deadline: Deadline) -> Any:
        """Poll the operation `initial` announces until it ends; its final body (parsed JSON or None)."""
        polling = _DeadlinePolling(deadline, self._timeouts.poll_interval, self._sleep)
        try:
            polling.initialize(self._client, initial, lambda response: _json(response.http_response))
            polling.run()
        except HttpResponseError as error:
            # A failed operation: the status body carries ARM's error (code and message).
            body = _json(error.response) if error.response is not None else None
            failed = isinstance(body, Mapping) and provisioning_state(body) in TERMINAL_STATES - {"Succeeded"}
            code, message = _failure_of(body) if failed else _error_of(body)
            raise ArmError(operation, error.status_code, code, message or error.reason or "") from None
        except DeadlineExceeded as error:
            raise ArmError(
                operation,
                None,
                "OperationTimedOut",
                f"{error}{STILL_RUNNING_HINT}",
            ) from None
        except ForeignHostRefused as error:
            raise ArmError(operation, None, "ForeignPollingHost", str(error)) from None
        except (BadResponse, BadStatus, OperationFailed) as error:
            # azure-core's own verdicts on an answer it cannot follow (no status link, a status
            # body without status), raised outside its HttpResponseError.
            raise ArmError(operation, None, "MalformedResponse", str(error) or type(error).__name__) from None
        except AzureError as error:
            raise ArmError(operation, None, type(error).__name__, error.message) from None
        return polling.resource()
