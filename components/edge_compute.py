"""Attach: a Pulumi dynamic resource that preflights the Hub VM over SSH and attaches it to the
Azure ML workspace as a VirtualMachine compute. Deleting it detaches; the VM is never touched.

Pulumi pickles the provider object into the state, so it holds no client, credential or key:
everything is created inside the methods from the resource's (secret) inputs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.runtime import rpc

from clients import ssh, ssh_keys
from clients.cloud import PUBLIC, discover
from clients.credentials import credential_from_environment
from clients.deadline import Deadline
from components import naming
from components.azureml_computes import ComputeClient, ComputeRef, VirtualMachineAttachment
from components.ssh_preflight import (
    HOST_KEY_FIX,
    PreflightError,
    PreflightTarget,
    host_key_fingerprints,
    run_preflight,
)

log = logging.getLogger(__name__)

PUBLIC_ARM_ENDPOINT = PUBLIC.resource_manager.rstrip("/")
HOST_KEY_SECONDS = 30.0
"""How long refresh and update wait for the VM's host keys."""

# An attached compute cannot be updated in place: any of these means detach and attach again,
# under the same name, so the old one must go first.
REPLACE_ON = (
    "subscriptionId",
    "resourceGroupName",
    "workspaceName",
    "location",
    "computeName",
    "address",
    "sshPort",
    "adminUsername",
    "privateKey",
    "resourceId",
    "armEndpoint",
)
OUTPUTS = ("computeId", "hostKeyFingerprint", "provisioningState", "privateKeySha256")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def _known(value: Any) -> bool:
    return value != rpc.UNKNOWN and value is not None


def _key_digest(private_key: str) -> str:
    """Lets diff see a changed key without the key itself being kept in the outputs."""
    return hashlib.sha256(private_key.encode()).hexdigest()


def _check_private_key(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "is required"
    try:
        ssh_keys.parse_private_key(value)
    except ssh_keys.KeyFormatError as error:
        return str(error)
    return None


class EdgeComputeProvider(ResourceProvider):
    """check, create (preflight + attach), diff, read (refresh), update, delete (detach)."""

    def _client(self, props: dict[str, Any]) -> ComputeClient:
        """Signed in the way the azure-native provider is (ARM_* variables, clients/credentials.py),
        for the audience the endpoint's own metadata names (clients/cloud.py): nothing per cloud
        is hard-coded."""
        cloud = discover(props.get("armEndpoint") or PUBLIC_ARM_ENDPOINT)
        return ComputeClient(credential_from_environment(cloud=cloud), cloud)

    def _preflight(self, target: PreflightTarget, deadline: Deadline) -> Any:
        return run_preflight(target, deadline=deadline)

    def _host_keys(self, address: str, port: int) -> dict[str, str]:
        return host_key_fingerprints(address, port, HOST_KEY_SECONDS)

    @staticmethod
    def _ref(props: dict[str, Any]) -> ComputeRef:
        return ComputeRef(
            props["subscriptionId"], props["resourceGroupName"], props["workspaceName"], props["computeName"]
        )

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures: list[CheckFailure] = []

        def fail(prop: str, reason: str) -> None:
            failures.append(CheckFailure(prop, reason))

        name = news.get("computeName")
        if _known(name) and (reason := naming.ML_COMPUTE.problem(str(name))):
            fail("computeName", reason)
        address = news.get("address")
        if _known(address):
            try:
                ipaddress.ip_address(str(address))
            except ValueError:
                if not _HOSTNAME.fullmatch(str(address)):
                    fail("address", f"{address!r} is neither an IP address nor a host name")
        port = news.get("sshPort")
        if _known(port) and (not isinstance(port, (int, float)) or not 1 <= int(port) <= 65535 or int(port) != port):
            fail("sshPort", f"{port!r} is not a port number (1-65535)")
        user = news.get("adminUsername")
        if _known(user) and (reason := naming.LINUX_ADMIN.problem(str(user))):
            fail("adminUsername", reason)
        key = news.get("privateKey")
        if _known(key) and (reason := _check_private_key(key)):
            fail("privateKey", reason)
        endpoint = news.get("armEndpoint")
        if _known(endpoint) and (urlsplit(str(endpoint)).scheme != "https" or not urlsplit(str(endpoint)).hostname):
            fail("armEndpoint", f"{endpoint!r} is not an https URL")
        for required in ("subscriptionId", "resourceGroupName", "workspaceName", "location"):
            if required in news and news[required] in ("", None):
                fail(required, "is required")
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        # One deadline end to end: preflight, the GET, the PUT and the wait for Succeeded.
        deadline = Deadline(float(props["deadlineSeconds"]))
        # The client first: a wrong endpoint or incomplete ARM_* variables fail now, not after
        # waiting out the VM's first boot.
        with self._client(props) as client:
            result = self._preflight(
                PreflightTarget(
                    address=props["address"],
                    port=int(props["sshPort"]),
                    username=props["adminUsername"],
                    private_key=props["privateKey"],
                    expected_fingerprint=props.get("expectedHostKeyFingerprint") or None,
                    deadline_seconds=float(props["deadlineSeconds"]),
                    min_free_disk_gb=float(props["minFreeDiskGb"]),
                    first_boot_marker=props["firstBootMarker"],
                ),
                deadline,
            )
            ref = self._ref(props)
            attachment = VirtualMachineAttachment(
                location=props["location"],
                address=props["address"],
                ssh_port=int(props["sshPort"]),
                username=props["adminUsername"],
                private_key_pem=ssh_keys.to_azure_ml_pem(props["privateKey"]),
                resource_id=props.get("resourceId") or None,
                owner=str(props.get("owner") or ""),
            )
            compute = client.attach(ref, attachment, deadline)
        return CreateResult(
            id_=compute.get("id") or ref.path, outs=self._outs(props, compute, result.host_key_fingerprint)
        )

    def _outs(self, props: dict[str, Any], compute: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        outs = {k: v for k, v in props.items() if k != "privateKey"}
        outs.update(
            computeId=compute.get("id") or self._ref(props).path,
            hostKeyFingerprint=fingerprint,
            provisioningState=compute.get("properties", {}).get("provisioningState"),
            privateKeySha256=_key_digest(props["privateKey"]),
        )
        return outs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        def changed(key: str) -> bool:
            if key == "privateKey":
                new = news.get("privateKey")
                return not _known(new) or olds.get("privateKeySha256") != _key_digest(new)
            return olds.get(key) != news.get(key)

        replaces = [k for k in REPLACE_ON if changed(k)]
        others = [k for k in news if k not in REPLACE_ON and k not in OUTPUTS and changed(k)]
        return DiffResult(
            changes=bool(replaces or others),
            replaces=replaces,
            stables=["computeId"] if not replaces else [],
            delete_before_replace=True,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only preflight settings changed (deadline, disk threshold, marker, expected key). A newly
        # expected host key must be one the VM offers now, before it is accepted into state.
        fingerprint = olds.get("hostKeyFingerprint", "")
        expected = news.get("expectedHostKeyFingerprint") or None
        if expected and expected != fingerprint:
            address, port = news["address"], int(news["sshPort"])
            try:
                offered = self._host_keys(address, port)
            except ssh.SshError as error:
                raise PreflightError(
                    "host-key", f"cannot check the new sshHostKeyFingerprint: {error}", "retry when the VM is up"
                ) from None
            if expected not in offered.values():
                raise PreflightError(
                    "host-key", str(ssh.HostKeyMismatch(address, port, expected, offered)), HOST_KEY_FIX
                )
            fingerprint = expected
        outs = {k: v for k, v in news.items() if k != "privateKey"}
        outs.update({k: olds.get(k) for k in OUTPUTS})
        outs["hostKeyFingerprint"] = fingerprint
        return UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        with self._client(props) as client:
            compute = client.get(self._ref(props), Deadline(float(props.get("deadlineSeconds") or 900)))
        if compute is None:
            log.warning(
                "compute %s is no longer attached to workspace %s", props["computeName"], props["workspaceName"]
            )
            return ReadResult(id_=None, outs={})
        recorded = props.get("hostKeyFingerprint")
        if recorded:
            address, port = props["address"], int(props["sshPort"])
            try:
                offered = self._host_keys(address, port)
            except ssh.SshError as error:
                log.warning("could not reach %s to verify its host key (%s)", address, error)
            else:
                if recorded not in offered.values():
                    raise PreflightError(
                        "host-key",
                        f"{ssh.HostKeyMismatch(address, port, recorded, offered)} (recorded at attach)",
                        "if the VM was rebuilt on purpose, replace the compute; otherwise investigate",
                    )
        outs = dict(props)
        outs["provisioningState"] = compute.get("properties", {}).get("provisioningState")
        return ReadResult(id_=id_, outs=outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        with self._client(props) as client:
            client.detach(self._ref(props), Deadline(float(props.get("deadlineSeconds") or 900)))


@dataclass(frozen=True)
class EdgeComputeArgs:
    subscription_id: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    location: pulumi.Input[str]
    compute_name: str
    address: pulumi.Input[str]
    admin_username: pulumi.Input[str]
    private_key: pulumi.Input[str]
    """Made secret here whatever the caller passed."""
    first_boot_marker: pulumi.Input[str]
    ssh_port: int = 22
    expected_host_key_fingerprint: str | None = None
    deadline_seconds: int = 900
    min_free_disk_gb: int = 20
    resource_id: str | None = None
    arm_endpoint: str = PUBLIC_ARM_ENDPOINT
    owner: str | None = None
    """`project/stack` written into the compute's description; defaults to this stack."""


class EdgeCompute(pulumi.dynamic.Resource, module="edge-training", name="EdgeCompute"):
    """The Hub VM attached to the workspace as a VirtualMachine compute."""

    def __init__(
        self,
        name: str,
        args: EdgeComputeArgs,
        opts: pulumi.ResourceOptions | None = None,
        provider: EdgeComputeProvider | None = None,
    ) -> None:
        props = {
            "subscriptionId": args.subscription_id,
            "resourceGroupName": args.resource_group_name,
            "workspaceName": args.workspace_name,
            "location": args.location,
            "computeName": args.compute_name,
            "address": args.address,
            "sshPort": args.ssh_port,
            "adminUsername": args.admin_username,
            "privateKey": pulumi.Output.secret(args.private_key),
            "firstBootMarker": args.first_boot_marker,
            "expectedHostKeyFingerprint": args.expected_host_key_fingerprint,
            "deadlineSeconds": args.deadline_seconds,
            "minFreeDiskGb": args.min_free_disk_gb,
            "resourceId": args.resource_id,
            "armEndpoint": args.arm_endpoint,
            "owner": args.owner or f"{pulumi.get_project()}/{pulumi.get_stack()}",
            **dict.fromkeys(OUTPUTS),
        }
        super().__init__(
            provider or EdgeComputeProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(delete_before_replace=True, additional_secret_outputs=["privateKey"])
            ),
        )

    # A dynamic resource's outputs are attributes named like its properties (camelCase).
    @property
    def compute_id(self) -> pulumi.Output[str]:
        return self.__dict__["computeId"]

    @property
    def compute_name(self) -> pulumi.Output[str]:
        return self.__dict__["computeName"]

    @property
    def host_key_fingerprint(self) -> pulumi.Output[str]:
        return self.__dict__["hostKeyFingerprint"]
