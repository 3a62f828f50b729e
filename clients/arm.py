"""One Resource Manager client on azure-core/azure-mgmt-core: GET, PUT and DELETE of one resource at
the API version the caller names, waiting out long-running operations.

Generic on purpose: it knows no cloud, no profile and no resource type. Callers pass the API
version of every request; the client adds none of its own. That is also why the pipeline is built
here policy by policy instead of from azure-mgmt-core's default configuration: the default adds
`ARMAutoResourceProviderRegistrationPolicy`, which answers a 409 MissingSubscriptionRegistration by
registering the provider at api-version 2016-02-01 (azure-mgmt-core, policies/_base.py), a version
the caller never chose and a cloud with a fixed profile (Azure Stack Hub) refuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RequestIdPolicy, RetryPolicy, UserAgentPolicy
from azure.core.pipeline.transport import HttpTransport
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

from clients.cloud import CONNECT_TIMEOUT, READ_TIMEOUT, USER_AGENT, Cloud

log = logging.getLogger(__name__)

RETRY_TOTAL = 4
# Retry-After is honoured, up to this: a misbehaving endpoint must not park a deployment for hours.
RETRY_AFTER_MAX = 60.0
# Between polls of a long-running operation: Retry-After when given (capped), else this.
POLL_INTERVAL = 5.0
# A whole long-running operation; VM creation on a busy Hub can take tens of minutes.
OPERATION_DEADLINE = 3600.0


@dataclass(frozen=True)
class ArmTimeouts:
    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT
    retry_after_max: float = RETRY_AFTER_MAX
    poll_interval: float = POLL_INTERVAL
    operation_deadline: float = OPERATION_DEADLINE


class ArmError(RuntimeError):
    """Resource Manager refused or failed a request: the HTTP status, ARM's error code and message."""

    def __init__(self, operation: str, status: int | None, code: str, message: str) -> None:
        self.operation, self.status, self.code, self.message = operation, status, code, message
        where = f"HTTP {status}" if status else "no answer"
        super().__init__(f"{operation}: {where} {code}: {message}".rstrip(": "))


class CappedRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy (429, 408 and 5xx; idempotent GET/PUT/DELETE) sleeps whatever
    Retry-After says. Same policy, with the wait capped."""

    def __init__(self, retry_after_max: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retry_after_max = retry_after_max

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, self._retry_after_max)


class _CappedPolling(ARMPolling):
    """ARMPolling (Azure-AsyncOperation, then Location, then the resource's provisioningState),
    with the Retry-After between polls capped like the retry policy's."""

    def __init__(self, cap: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cap = cap

    def _extract_delay(self) -> float:
        return min(super()._extract_delay(), self._cap)


def _error_of(body: Any) -> tuple[str, str]:
    """ARM's error shape, `{"error": {"code", "message"}}`; an operation status nests it the same way."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("code") or "Error"), str(error.get("message") or "")
    return "Error", ""


def _json(response: Any) -> Any:
    try:
        return response.json() if response.text() else None
    except ValueError:
        return None


class ArmClient:
    """Resource Manager of one cloud, signed in with `credential` for the cloud's own audience."""

    def __init__(
        self,
        cloud: Cloud,
        credential: TokenCredential,
        transport: HttpTransport | None = None,
        timeouts: ArmTimeouts = ArmTimeouts(),
        retry_total: int = RETRY_TOTAL,
    ) -> None:
        base = cloud.resource_manager.rstrip("/")
        if urlsplit(base).scheme != "https":
            raise ValueError(f"{cloud.resource_manager!r} is not an https URL")
        self._base = base
        self._timeouts = timeouts
        self._owns_transport = transport is None
        policies = [
            RequestIdPolicy(),
            UserAgentPolicy(base_user_agent=USER_AGENT),
            CappedRetryPolicy(
                timeouts.retry_after_max, retry_total=retry_total, retry_backoff_factor=0.8, retry_backoff_max=30
            ),
            # Bearer token for the cloud's audience, renewed before expiry, with CAE challenges handled.
            ARMChallengeAuthenticationPolicy(credential, cloud.arm_scope),
            # Headers on an allow-list only, never bodies (a body can carry a VM's custom data).
            ARMHttpLoggingPolicy(),
        ]
        self._client = ARMPipelineClient(base_url=base, policies=policies, transport=transport)

    def __enter__(self) -> ArmClient:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_transport:  # a caller's transport stays open for its other users
            self._client.close()

    def _call_options(self) -> dict[str, float]:
        return {"connection_timeout": self._timeouts.connect, "read_timeout": self._timeouts.read}

    def _send(self, method: str, path: str, api_version: str, body: Any = None) -> PipelineResponse[Any, Any]:
        request = HttpRequest(method, f"{self._base}{path}", params={"api-version": api_version}, json=body)
        try:
            return self._client.send_request(request, _return_pipeline_response=True, **self._call_options())
        except AzureError as error:
            raise ArmError(f"{method} {path}", None, type(error).__name__, error.message) from None

    @staticmethod
    def _raise_for(operation: str, response: Any) -> None:
        code, message = _error_of(_json(response))
        raise ArmError(operation, response.status_code, code, message)

    def get(self, path: str, api_version: str) -> dict[str, Any] | None:
        """The resource at `path`, or None when Resource Manager answers 404."""
        response = self._send("GET", path, api_version).http_response
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._raise_for(f"GET {path}", response)
        return dict(_json(response) or {})

    def put(self, path: str, api_version: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT `body` and wait until the operation ends; the resource as Resource Manager then has it."""
        pipeline_response = self._send("PUT", path, api_version, dict(body))
        response = pipeline_response.http_response
        if response.status_code not in (200, 201, 202):
            self._raise_for(f"PUT {path}", response)
        # Finished already only when nothing says otherwise: a 201 may carry an operation to follow
        # even without a provisioningState in its body.
        announced = response.status_code == 201 and any(
            h in response.headers for h in ("Azure-AsyncOperation", "Location")
        )
        if response.status_code in (200, 201) and not announced and self._succeeded(_json(response)):
            return dict(_json(response) or {})
        result = self._wait(f"PUT {path}", pipeline_response)
        return dict(result) if isinstance(result, Mapping) else self.get(path, api_version) or {}

    def post(self, path: str, api_version: str) -> dict[str, Any]:
        """POST an action without a body (e.g. a storage account's listKeys); its answer."""
        response = self._send("POST", path, api_version).http_response
        if response.status_code != 200:
            self._raise_for(f"POST {path}", response)
        return dict(_json(response) or {})

    def delete(self, path: str, api_version: str) -> bool:
        """DELETE and wait until it is gone. False when there was nothing to delete (404 or 204)."""
        pipeline_response = self._send("DELETE", path, api_version)
        response = pipeline_response.http_response
        if response.status_code in (204, 404):
            return False
        if response.status_code not in (200, 202):
            self._raise_for(f"DELETE {path}", response)
        if response.status_code == 202:
            self._wait(f"DELETE {path}", pipeline_response)
        return True

    @staticmethod
    def _succeeded(body: Any) -> bool:
        properties = body.get("properties") if isinstance(body, Mapping) else None
        state = properties.get("provisioningState") if isinstance(properties, Mapping) else None
        return state in (None, "Succeeded")

    def _wait(self, operation: str, initial: PipelineResponse[Any, Any]) -> Any:
        polling = _CappedPolling(
            self._timeouts.retry_after_max, timeout=self._timeouts.poll_interval, **self._call_options()
        )
        poller = LROPoller(self._client, initial, lambda response: _json(response.http_response), polling)
        started = time.monotonic()
        try:
            result = poller.result(timeout=self._timeouts.operation_deadline)
        except HttpResponseError as error:
            # A failed operation: the status body carries ARM's error (code and message).
            body = _json(error.response) if error.response is not None else None
            code, message = _error_of(body)
            raise ArmError(operation, error.status_code, code, message or error.reason or "") from None
        except AzureError as error:
            raise ArmError(operation, None, type(error).__name__, error.message) from None
        if not poller.done():
            raise ArmError(
                operation,
                None,
                "OperationTimedOut",
                f"still running after {time.monotonic() - started:.0f}s; it may yet finish: "
                "look at the resource in the portal before retrying",
            )
        return result
