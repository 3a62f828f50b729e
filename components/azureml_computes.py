"""The Azure ML compute REST API, for attaching a VM by address.

azure-ai-ml 1.35's VirtualMachineCompute never sends `address` and requires a resource id, which
a Hub VM does not have in Azure, so the request is built here and sent through the project's one
Resource Manager client (clients/arm.py): its deadline, retries, answer checks, DELETE semantics
and same-host polling are the ones every other ARM call has.

Never echoes a body that can hold a key: the request carries `privateKeyData`, and a compute's GET
can carry it back, so errors quote only the service's error code and message (scrubbed of key
material by `ArmError`), and the debug log shows a compute with its credential fields redacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport

from clients.arm import STILL_RUNNING_HINT, ArmClient, ArmError, ArmTimeouts, provisioning_state, scrub
from clients.cloud import PUBLIC, Cloud
from clients.deadline import Deadline

log = logging.getLogger(__name__)

# The newest stable version of Microsoft.MachineLearningServices, the one azure-ai-ml 1.35's own
# ARM client targets (azure/ai/ml/_restclient/arm_ml_service, specification/machinelearningservices
# stable/2025-12-01 in Azure/azure-rest-api-specs).
API_VERSION = "2025-12-01"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
RETRY_TOTAL = 6
SECRET_FIELDS = frozenset({"privatekeydata", "password", "publickeydata"})
"""Fields of VirtualMachineSshCredentials (2025-12-01) that hold credentials; never shown."""
CLEANUP_SECONDS = 120.0
"""Time to detach a compute that failed or outlived the deadline, after the deadline itself."""
TIMEOUT_CODES = frozenset({"DeadlineExceeded", "OperationTimedOut"})


def redact(value: Any) -> Any:
    """`value` with every credential field replaced, at any depth (for logs and errors)."""
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class ComputeApiError(RuntimeError):
    """Resource Manager refused a request, or gave no usable answer; carries the service's own code
    and message, never a request or response body."""

    def __init__(self, action: str, status: int, code: str, message: str) -> None:
        self.action, self.status, self.code, self.message = action, status, code, scrub(message)
        where = f"HTTP {status} " if status else ""
        super().__init__(f"{action} failed: {where}{code}: {self.message}")

    @classmethod
    def of(cls, action: str, error: ArmError) -> ComputeApiError:
        """Resource Manager's verdict, said of the compute; a deadline of either kind is "Timeout"."""
        code = "Timeout" if error.code in TIMEOUT_CODES else error.code
        return cls(action, error.status or 0, code, error.message)


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


def _description(compute: dict[str, Any]) -> str:
    properties = compute.get("properties")
    return str(properties.get("description") or "") if isinstance(properties, dict) else ""


class ComputeClient:
    """Attach, read and detach computes of one Resource Manager endpoint. Every call takes the
    `Deadline` it must finish within."""

    def __init__(
        self,
        credential: TokenCredential,
        cloud: Cloud = PUBLIC,
        transport: HttpTransport | None = None,
        retry_total: int = RETRY_TOTAL,
        poll_seconds: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        timeouts = ArmTimeouts(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, poll_interval=poll_seconds)
        # The token audience is the cloud's own, from its metadata (clients/cloud.py), never public
        # Azure's hard-coded.
        self._arm = ArmClient(cloud, credential, transport, timeouts, retry_total, sleep)

    def close(self) -> None:
        self._arm.close()

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def get(self, ref: ComputeRef, deadline: Deadline) -> dict[str, Any] | None:
        """The compute, or None when the workspace has none by that name."""
        action = f"GET compute {ref.name!r} of workspace {ref.workspace!r}"
        try:
            return self._arm.get(ref.path, API_VERSION, deadline)
        except ArmError as error:
            raise ComputeApiError.of(action, error) from None

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
            state = provisioning_state(existing) or "Unknown"
            raise ComputeExistsError(
                action,
                0,
                "ComputeExists",
                f"workspace {ref.workspace!r} already has a compute named {ref.name!r} that this stack did not "
                f"attach (state {state}); nothing was changed. Choose another name (config computeName), "
                f"or, if it is a leftover of this stack, detach it first: az ml compute detach --name {ref.name} "
                f"--workspace-name {ref.workspace} --resource-group {ref.resource_group}",
            )
        try:
            compute = self._arm.put(ref.path, API_VERSION, attachment.body(), deadline)
        except ArmError as error:
            failed = ComputeApiError.of(action, error)
            if error.status is not None and error.status >= 400:
                raise failed from None  # refused: nothing was created
            raise self._undo(ref, failed, Deadline(CLEANUP_SECONDS, deadline.clock)) from None
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
        # A compute detached again will not "yet finish": Resource Manager's advice no longer holds.
        return ComputeApiError(
            error.action, error.status, error.code, error.message.removesuffix(STILL_RUNNING_HINT) + note
        )

    def detach(self, ref: ComputeRef, deadline: Deadline) -> None:
        """Detach (never delete the machine); a compute that is already gone is fine."""
        action = f"detach compute {ref.name!r} from workspace {ref.workspace!r}"
        try:
            self._arm.delete(ref.path, API_VERSION, deadline, query={"underlyingResourceAction": "Detach"})
        except ArmError as error:
            raise ComputeApiError.of(action, error) from None
