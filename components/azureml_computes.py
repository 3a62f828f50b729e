"""The Azure ML compute REST API, for attaching a VM by address.

azure-ai-ml 1.35's VirtualMachineCompute never sends `address` and requires a resource id, which
a Hub VM does not have in Azure, so the request is built here and sent through azure-core's
pipeline (bearer token, retries) like any Azure SDK call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

# The newest stable version of Microsoft.MachineLearningServices, the one azure-ai-ml 1.35's own
# ARM client targets (azure/ai/ml/_restclient/arm_ml_service, specification/machinelearningservices
# stable/2025-12-01 in Azure/azure-rest-api-specs).
API_VERSION = "2025-12-01"
PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
TERMINAL_STATES = ("Succeeded", "Failed", "Canceled")


class ComputeApiError(RuntimeError):
    """Resource Manager refused a request; carries the service's own code and message."""

    def __init__(self, action: str, status: int, code: str, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(f"{action} failed: HTTP {status} {code}: {message}")


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
    description: str = "Azure Stack Hub VM attached by edge-training"

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


def _error(action: str, response: HttpResponse) -> ComputeApiError:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    return ComputeApiError(
        action, response.status_code, error.get("code", "Unknown"), error.get("message", response.text()[:500])
    )


class ComputeClient:
    """Attach, read and detach computes of one Resource Manager endpoint."""

    def __init__(
        self,
        credential: TokenCredential,
        endpoint: str = PUBLIC_ARM_ENDPOINT,
        transport: HttpTransport | None = None,
        retry_total: int = 6,
        poll_seconds: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        policies = [
            HeadersPolicy(),
            UserAgentPolicy(base_user_agent="edge-training"),
            # 408, 429 and 5xx are retried with exponential backoff; a Retry-After (or
            # retry-after-ms) header from Resource Manager takes precedence over the backoff.
            RetryPolicy(retry_total=retry_total, retry_backoff_factor=1.0, retry_backoff_max=60),
            BearerTokenCredentialPolicy(credential, ARM_SCOPE),
        ]
        self._client = PipelineClient(base_url=endpoint, policies=policies, transport=transport)
        self._poll_seconds = poll_seconds
        self._sleep = sleep

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, ref: ComputeRef, body: dict[str, Any] | None = None, **query: str) -> HttpResponse:
        request = HttpRequest(
            method,
            self._client.format_url(ref.path),
            params={"api-version": API_VERSION, **query},
            json=body,
            headers={"Accept": "application/json"},
        )
        return self._client.send_request(request)

    def get(self, ref: ComputeRef) -> dict[str, Any] | None:
        """The compute, or None when the workspace has none by that name."""
        response = self._send("GET", ref)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _error(f"GET compute {ref.name}", response)
        return response.json()

    def attach(self, ref: ComputeRef, attachment: VirtualMachineAttachment, deadline_seconds: float) -> dict[str, Any]:
        """PUT the compute and wait until it is provisioned; on Failed, raise the service's errors."""
        response = self._send("PUT", ref, attachment.body())
        if response.status_code not in (200, 201):
            raise _error(f"attach compute {ref.name}", response)
        compute = response.json()
        end = time.monotonic() + deadline_seconds
        while (state := _state(compute)) not in TERMINAL_STATES:
            if time.monotonic() > end:
                raise ComputeApiError(
                    f"attach compute {ref.name}", 0, "Timeout", f"still {state} after {deadline_seconds:.0f}s"
                )
            self._sleep(self._poll_seconds)
            compute = self.get(ref) or {}
        if state != "Succeeded":
            errors = compute.get("properties", {}).get("provisioningErrors") or []
            messages = "; ".join(
                f"{e.get('error', {}).get('code', '')}: {e.get('error', {}).get('message', '')}" for e in errors
            )
            raise ComputeApiError(
                f"attach compute {ref.name}", 200, f"Provisioning{state}", messages or json.dumps(compute)
            )
        return compute

    def detach(self, ref: ComputeRef, deadline_seconds: float = 600.0) -> None:
        """Detach (never delete the machine); a compute that is already gone is fine."""
        response = self._send("DELETE", ref, underlyingResourceAction="Detach")
        if response.status_code == 404:
            return
        if response.status_code not in (200, 202, 204):
            raise _error(f"detach compute {ref.name}", response)
        end = time.monotonic() + deadline_seconds
        while response.status_code == 202 and self.get(ref) is not None:
            if time.monotonic() > end:
                raise ComputeApiError(f"detach compute {ref.name}", 202, "Timeout", "still present")
            self._sleep(self._poll_seconds)


def _state(compute: dict[str, Any]) -> str:
    return str(compute.get("properties", {}).get("provisioningState", "Unknown"))
