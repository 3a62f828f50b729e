"""The Azure ML compute REST API, for attaching a VM by address.

azure-ai-ml 1.35's VirtualMachineCompute never sends `address` and requires a resource id, which
a Hub VM does not have in Azure, so the request is built here and sent through azure-core's
pipeline (bearer token, retries) like any Azure SDK call.

Bounded: every call runs inside a `Deadline`; connect and read timeouts and any `Retry-After` are
cut to what is left of it (clients/deadline.py). Never echoes a body that can hold a key: the
request carries `privateKeyData`, and a compute's GET can carry it back, so errors quote only the
service's error code and message, scrubbed of key material.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, UserAgentPolicy
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse

from clients.cloud import PUBLIC, Cloud
from clients.deadline import BodyDeadlinePolicy, Deadline, DeadlineExceeded, DeadlineRetryPolicy, poll_until

log = logging.getLogger(__name__)

# The newest stable version of Microsoft.MachineLearningServices, the one azure-ai-ml 1.35's own
# ARM client targets (azure/ai/ml/_restclient/arm_ml_service, specification/machinelearningservices
# stable/2025-12-01 in Azure/azure-rest-api-specs).
API_VERSION = "2025-12-01"
TERMINAL_STATES = ("Succeeded", "Failed", "Canceled")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
SECRET_FIELDS = frozenset({"privatekeydata", "password", "publickeydata"})
"""Fields of VirtualMachineSshCredentials (2025-12-01) that hold credentials; never shown."""
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*-----.*?(-----END [A-Z0-9 ]*-----|$)", re.DOTALL)
MESSAGE_LIMIT = 500
CLEANUP_SECONDS = 120.0
"""Time to detach a compute that failed or outlived the deadline, after the deadline itself."""


def redact(value: Any) -> Any:
    """`value` with every credential field replaced, at any depth (for logs and errors)."""
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def scrub(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A service message fit for an error: key material (PEM blocks) cut out, length bounded."""
    text = _PEM.sub("[redacted key]", text)
    return text if len(text) <= limit else text[:limit] + "..."


class ComputeApiError(RuntimeError):
    """Resource Manager refused a request, or gave no usable answer; carries the service's own code
    and message, never a request or response body."""

    def __init__(self, action: str, status: int, code: str, message: str) -> None:
        self.action, self.status, self.code, self.message = action, status, code, scrub(message, 4 * MESSAGE_LIMIT)
        where = f"HTTP {status} " if status else ""
        super().__init__(f"{action} failed: {where}{code}: {self.message}")


class ComputeExistsError(ComputeApiError):
    """A compute of that name exists and this stack did not attach it; nothing was sent."""


@dataclass(frozen=True)
class ComputeRef:
    subscription_id: str
    resource_group: str
    workspace: str
    name: str

    @property
    def path(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}/computes/{self.name}"
        )


@dataclass(frozen=True)
class VirtualMachineAttachment:
    """The body of a VirtualMachine compute (ComputeResource with computeType VirtualMachine)."""

    location: str
    address: str
    ssh_port: int
    username: str
    private_key_pem: str = field(repr=False)
    resource_id: str | None = None
    owner: str = ""
    """The stack that attaches (`project/stack`): written into the description, so a later GET can
    tell our own compute (a retried create) from someone else's of the same name."""

    @property
    def description(self) -> str:
        return f"Azure Stack Hub VM attached by edge-training stack {self.owner}".rstrip()

    def body(self) -> dict[str, Any]:
        compute: dict[str, Any] = {
            "computeType": "VirtualMachine",
            "description": self.description,
            "properties": {
                "address": self.address,
                "sshPort": self.ssh_port,
                "administratorAccount": {"username": self.username, "privateKeyData": self.private_key_pem},
            },
        }
        if self.resource_id:
            compute["resourceId"] = self.resource_id
        return {"location": self.location, "properties": compute}


def _json(action: str, response: HttpResponse) -> dict[str, Any]:
    """The body as a JSON object, or a ComputeApiError that says so (without the body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ComputeApiError(
            action,
            response.status_code,
            "MalformedResponse",
            f"the answer is not a JSON object ({len(response.content or b'')} bytes, "
            f"Content-Type {response.headers.get('Content-Type', 'none')!r})",
        )
    return body


def _error(action: str, response: HttpResponse) -> ComputeApiError:
    """ARM's `{"error": {"code", "message"}}`; only those two fields are ever quoted."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ComputeApiError(action, response.status_code, "Unknown", "the answer carries no ARM error object")
    return ComputeApiError(
        action,
        response.status_code,
        scrub(str(error.get("code") or "Unknown"), 100),
        scrub(str(error.get("message") or "")),
    )


def _state(compute: dict[str, Any]) -> str:
    properties = compute.get("properties")
    return str(properties.get("provisioningState", "Unknown")) if isinstance(properties, dict) else "Unknown"


def _description(compute: dict[str, Any]) -> str:
    properties = compute.get("properties")
    return str(properties.get("description") or "") if isinstance(properties, dict) else ""


def _provisioning_errors(compute: dict[str, Any]) -> str:
    properties = compute.get("properties")
    errors = properties.get("provisioningErrors") if isinstance(properties, dict) else None
    parts = []
    for entry in errors if isinstance(errors, list) else []:
        error = entry.get("error") if isinstance(entry, dict) else None
        if isinstance(error, dict):
            parts.append(f"{error.get('code', '')}: {error.get('message', '')}")
    return scrub("; ".join(parts))


class ComputeClient:
    """Attach, read and detach computes of one Resource Manager endpoint. Every call takes the
    `Deadline` it must finish within."""

    def __init__(
        self,
        credential: TokenCredential,
        cloud: Cloud = PUBLIC,
        transport: HttpTransport | None = None,
        retry_total: int = 6,
        poll_seconds: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # 408, 429, 5xx and connection errors are retried with exponential backoff; Resource
        # Manager's Retry-After takes precedence, unless it would end past the deadline.
        self._retry = DeadlineRetryPolicy(
            Deadline(0),
            CONNECT_TIMEOUT,
            READ_TIMEOUT,
            retry_total=retry_total,
            retry_backoff_factor=1.0,
            retry_backoff_max=60,
        )
        policies = [
            HeadersPolicy(),
            UserAgentPolicy(base_user_agent="edge-training"),
            self._retry,
            # The token audience is the cloud's own, from its metadata (clients/cloud.py), never
            # public Azure's hard-coded.
            BearerTokenCredentialPolicy(credential, cloud.arm_scope),
            BodyDeadlinePolicy(),  # a trickled body ends at the call's deadline too
        ]
        self._endpoint = cloud.resource_manager.rstrip("/")
        self._client = PipelineClient(base_url=self._endpoint, policies=policies, transport=transport)
        self._poll_seconds = poll_seconds
        self._sleep = sleep

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(
        self,
        action: str,
        method: str,
        ref: ComputeRef,
        deadline: Deadline,
        body: dict[str, Any] | None = None,
        **query: str,
    ) -> HttpResponse:
        self._retry.deadline = deadline
        request = HttpRequest(
            method,
            self._client.format_url(ref.path),
            params={"api-version": API_VERSION, **query},
            json=body,
            headers={"Accept": "application/json"},
        )
        try:
            return self._client.send_request(request)
        except DeadlineExceeded as error:
            raise ComputeApiError(action, 0, "Timeout", str(error)) from None
        except AzureError as error:
            # azure-core's messages name the URL and the transport's error, never the body.
            raise ComputeApiError(action, 0, type(error).__name__, f"{self._endpoint}: {error.message}") from None

    def get(self, ref: ComputeRef, deadline: Deadline) -> dict[str, Any] | None:
        """The compute, or None when the workspace has none by that name."""
        action = f"GET compute {ref.name!r} of workspace {ref.workspace!r}"
        response = self._send(action, "GET", ref, deadline)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _error(action, response)
        return _json(action, response)

    def attach(self, ref: ComputeRef, attachment: VirtualMachineAttachment, deadline: Deadline) -> dict[str, Any]:
        """GET, then PUT the compute and wait until it is provisioned; on Failed, raise the service's
        errors; at the deadline, a ComputeApiError with code "Timeout".

        The PUT replaces a compute of the same name (Compute_CreateOrUpdate at 2025-12-01: "This
        call will overwrite a compute if it exists. [...] If your intent is to create a new
        compute, do a GET first to verify that it does not exist yet"), so a compute this stack
        did not attach is refused before anything is sent.

        A compute that the PUT created and that then fails, or is still provisioning at the
        deadline, is detached again (within `CLEANUP_SECONDS` of its own): left behind, it would
        block the next attach under this name."""
        action = f"attach compute {ref.name!r} to workspace {ref.workspace!r}"
        existing = self.get(ref, deadline)
        if existing is not None and _description(existing) != attachment.description:
            raise ComputeExistsError(
                action,
                0,
                "ComputeExists",
                f"workspace {ref.workspace!r} already has a compute named {ref.name!r} that this stack did not "
                f"attach (state {_state(existing)}); nothing was changed. Choose another name (config computeName), "
                f"or, if it is a leftover of this stack, detach it first: az ml compute detach --name {ref.name} "
                f"--workspace-name {ref.workspace} --resource-group {ref.resource_group}",
            )
        response = self._send(action, "PUT", ref, deadline, attachment.body())
        if response.status_code not in (200, 201):
            raise _error(action, response)
        try:
            compute = _json(action, response)
            last = [_state(compute)]

            def provisioned() -> dict[str, Any] | None:
                current = self.get(ref, deadline) or {}
                last[0] = _state(current)
                return current if last[0] in TERMINAL_STATES else None

            if last[0] not in TERMINAL_STATES:
                settled = poll_until(provisioned, deadline, self._poll_seconds, self._sleep, wait_first=True)
                if settled is None:
                    raise ComputeApiError(action, 0, "Timeout", f"still {last[0]} after {deadline.seconds:g}s")
                compute = settled
            state = _state(compute)
            if state != "Succeeded":
                raise ComputeApiError(
                    action, 200, f"Provisioning{state}", _provisioning_errors(compute) or "the service gave no reason"
                )
        except ComputeApiError as error:
            raise self._undo(ref, error, Deadline(CLEANUP_SECONDS, deadline.clock)) from None
        log.debug("compute %s attached: %s", ref.name, redact(compute))
        return compute

    def _undo(self, ref: ComputeRef, error: ComputeApiError, deadline: Deadline) -> ComputeApiError:
        """Detach what the PUT created; `error` again, saying whether that worked."""
        try:
            self.detach(ref, deadline)
        except ComputeApiError as cleanup:
            note = f"; detaching it again failed too ({cleanup}): detach it by hand before the next attempt"
        else:
            note = "; it was detached again"
        return ComputeApiError(error.action, error.status, error.code, error.message + note)

    def detach(self, ref: ComputeRef, deadline: Deadline) -> None:
        """Detach (never delete the machine); a compute that is already gone is fine."""
        action = f"detach compute {ref.name!r} from workspace {ref.workspace!r}"
        response = self._send(action, "DELETE", ref, deadline, underlyingResourceAction="Detach")
        if response.status_code == 404:
            return
        if response.status_code not in (200, 202, 204):
            raise _error(action, response)
        if response.status_code == 202:
            gone = poll_until(
                lambda: True if self.get(ref, deadline) is None else None,
                deadline,
                self._poll_seconds,
                self._sleep,
                wait_first=True,
            )
            if gone is None:
                raise ComputeApiError(action, 202, "Timeout", f"still present after {deadline.seconds:g}s")
