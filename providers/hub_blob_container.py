"""The Hub storage account's blob container, made through the blob service (the data plane).

Why not Resource Manager: Microsoft's tables of what a Hub's Microsoft.Storage provider serves
(azure-stack-docs, "Resource provider API versions supported by Azure Stack Hub profiles",
profile 2020-09-01-hybrid) list storage accounts, their keys, name checks, usages and operations,
and no `blobServices/containers`; HashiCorp's terraform-provider-azurestack makes containers
through the blob endpoint (internal/services/storage/storage_container_resource.go). So this
resource asks Resource Manager for the account's key (`listKeys`, at the profile's Storage
version) and then speaks the blob API at 2019-07-07, the newest version a Hub's storage serves
(the Hub storage development guide), signed with Shared Key.

No key is kept: it is fetched inside each call, used, and dropped. The state holds where the
container is and whether this stack made it.

Adoption: a container that already exists under the name is adopted when it is private (no
anonymous access), since it can only sit in the stack's own account; an adopted container is
never deleted by this resource (it may hold data this stack did not put there), and a public one
is refused with the reason. A container this resource made is deleted with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pulumi
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import HttpTransport
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from clients.arm import ArmError
from clients.cloud import CONNECT_TIMEOUT, READ_TIMEOUT, CloudDiscoveryError
from clients.deadline import UntrustedNotRetried
from clients.trust import bundle_file
from providers.hub_arm_resource import (
    HUB_API_VERSIONS,
    SEGMENT,
    HubArmError,
    HubArmResourceProvider,
    InputCheck,
    known,
)

log = logging.getLogger(__name__)

BLOB_API_VERSION = "2019-07-07"
# Naming and Referencing Containers, Blobs, and Metadata (Microsoft Learn): 3-63 characters,
# lower-case letters, digits and single hyphens, starting and ending with a letter or digit.
_CONTAINER = re.compile(r"(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")

IDENTITY = ("armEndpoint", "subscriptionId", "resourceGroupName", "accountName", "blobEndpoint", "containerName")
INPUTS = (*IDENTITY, "tenantId", "identityProvider", "caCertificates")
OUTPUTS = ("adopted", "publicAccess")


class HubBlobContainerError(RuntimeError):
    """What went wrong with the container; never carries the account key."""


def _retry_policy() -> Any:
    """The storage SDK's exponential retry, minus retries of a certificate refused (made here:
    the SDK is imported only when a container is touched)."""
    from azure.storage.blob import ExponentialRetry

    class Retry(UntrustedNotRetried, ExponentialRetry):
        pass

    return Retry(initial_backoff=2, increment_base=2, retry_total=4, random_jitter_range=1, retry_connect=1)


class HubBlobContainerProvider(ResourceProvider):
    """create, read, diff, update and delete of one private blob container on a Hub account."""

    def __init__(self, transport: HttpTransport | None = None, blob_transport: HttpTransport | None = None) -> None:
        # Tests hand in transports that trust their CA; the pickled provider carries neither.
        self._transport = transport
        self._blob_transport = blob_transport

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self._transport = None
        self._blob_transport = None

    # --- the key and the container client, made per call ----------------------------------------

    def _account_key(self, props: Mapping[str, Any]) -> str | None:
        """The account's first key from listKeys, or None when the account is gone."""
        path = (
            f"/subscriptions/{props['subscriptionId']}/resourceGroups/{props['resourceGroupName']}"
            f"/providers/Microsoft.Storage/storageAccounts/{props['accountName']}/listKeys"
        )
        with HubArmResourceProvider(self._transport).client_for(props) as client:
            try:
                answer = client.post(path, HUB_API_VERSIONS["Microsoft.Storage"])
            except ArmError as error:
                if error.status == 404:
                    return None
                raise
        keys = [k.get("value") for k in answer.get("keys") or [] if isinstance(k, Mapping)]
        if not keys or not isinstance(keys[0], str) or not keys[0]:
            raise HubBlobContainerError(f"listKeys of {props['accountName']} answered without a key")
        return keys[0]

    @contextmanager
    def _container(self, props: Mapping[str, Any], key: str) -> Iterator[Any]:
        from azure.storage.blob import ContainerClient

        options: dict[str, Any] = {}
        if self._blob_transport is not None:
            options["transport"] = self._blob_transport
        elif props.get("caCertificates"):  # the Hub's blob endpoint is signed by its CA, too
            options["connection_verify"] = str(bundle_file(str(props["caCertificates"])))
        client = ContainerClient(
            account_url=str(props["blobEndpoint"]).rstrip("/"),
            container_name=str(props["containerName"]),
            credential={"account_name": str(props["accountName"]), "account_key": key},
            api_version=BLOB_API_VERSION,
            # A busy service (408/429/5xx) is waited out; a connection that fails once more only
            # (the SDK's default waits 15 s, then 45 s), and a certificate refused not at all.
            retry_policy=_retry_policy(),
            connection_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            **options,
        )
        try:
            yield client
        finally:
            if self._blob_transport is None:  # a caller's transport stays open for its other users
                client.close()

    @staticmethod
    def _failed(error: Exception, props: Mapping[str, Any], key: str | None) -> HubBlobContainerError:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if key:
            text = text.replace(key, "[secret]")
        return HubBlobContainerError(f"blob container {props.get('containerName')!r}: {text}")

    # --- check ----------------------------------------------------------------------------------

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = InputCheck(news)
        for prop in ("armEndpoint", "blobEndpoint"):
            inputs.https_url(prop)
        inputs.string("subscriptionId", True, SEGMENT)
        inputs.string("resourceGroupName", True, SEGMENT)
        inputs.string("accountName", True, _ACCOUNT)
        inputs.string("containerName", True, _CONTAINER)
        inputs.identity_provider()
        inputs.string("tenantId", False, SEGMENT)
        inputs.ca_certificates()
        return CheckResult(news, inputs.failures)

    # --- create, read, update, delete -----------------------------------------------------------

    def create(self, props: dict[str, Any]) -> CreateResult:
        key: str | None = None
        adopted = False
        try:
            key = self._account_key(props)
            if key is None:
                raise HubBlobContainerError(f"storage account {props['accountName']!r} not found on the Hub")
            with self._container(props, key) as container:
                try:
                    container.create_container()  # no x-ms-blob-public-access: private
                except ResourceExistsError:
                    adopted = True
                public = container.get_container_properties().public_access
        except HubBlobContainerError:
            raise
        except (AzureError, ArmError, CloudDiscoveryError, HubArmError, ValueError) as error:
            raise self._failed(error, props, key) from None
        if public:
            raise HubBlobContainerError(
                f"blob container {props['containerName']!r} exists with anonymous {public} access; this stack keeps "
                "private data only in a private container: remove its public access or choose another name"
            )
        if adopted:
            log.warning(
                "blob container %s exists and is private; adopting it (it will be kept on delete)",
                props["containerName"],
            )
        return CreateResult(id_=self._id(props), outs=self._outs(props, adopted, public))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        key: str | None = None
        try:
            key = self._account_key(props)
            if key is None:
                return ReadResult(id_=None, outs={})
            with self._container(props, key) as container:
                public = container.get_container_properties().public_access
        except ResourceNotFoundError:
            log.warning("blob container %s is gone from the Hub", props.get("containerName"))
            return ReadResult(id_=None, outs={})
        except (AzureError, ArmError, CloudDiscoveryError, HubArmError, ValueError) as error:
            raise self._failed(error, props, key) from None
        return ReadResult(id_=id_, outs=self._outs(props, bool(props.get("adopted")), public))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only how to sign in changed (tenant, identity provider, the Hub's CA): nothing to send.
        return UpdateResult(outs=self._outs(news, bool(olds.get("adopted")), olds.get("publicAccess")))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("adopted"):
            log.warning("blob container %s was adopted, not made by this stack: kept", props.get("containerName"))
            return
        key: str | None = None
        try:
            key = self._account_key(props)
            if key is None:  # the account went, and its containers with it
                return
            with self._container(props, key) as container:
                container.delete_container()
        except ResourceNotFoundError:
            log.info("blob container %s was already gone", props.get("containerName"))
        except (AzureError, ArmError, CloudDiscoveryError, HubArmError, ValueError) as error:
            raise self._failed(error, props, key) from None

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        def changed(prop: str) -> bool:
            return not known(news.get(prop)) or (olds.get(prop) or None) != (news.get(prop) or None)

        replaces = [prop for prop in IDENTITY if changed(prop)]
        updates = [prop for prop in INPUTS if prop not in replaces and changed(prop)]
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    @staticmethod
    def _id(props: Mapping[str, Any]) -> str:
        return f"{str(props['blobEndpoint']).rstrip('/')}/{props['containerName']}"

    @staticmethod
    def _outs(props: Mapping[str, Any], adopted: bool, public: str | None) -> dict[str, Any]:
        return {**{k: props.get(k) for k in INPUTS}, "adopted": adopted, "publicAccess": public or None}


@dataclass(frozen=True)
class HubBlobContainerArgs:
    arm_endpoint: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    identity_provider: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    account_name: pulumi.Input[str]
    blob_endpoint: pulumi.Input[str]
    container_name: pulumi.Input[str]
    tenant_id: pulumi.Input[str] | None = None
    ca_certificates: str | None = None


class HubBlobContainer(pulumi.dynamic.Resource, module="edge-training", name="HubBlobContainer"):
    """A private blob container on a Hub storage account, made through the blob service.
    Outputs: the inputs, `adopted` (it existed before; kept on delete) and `publicAccess`."""

    def __init__(
        self,
        name: str,
        args: HubBlobContainerArgs,
        opts: pulumi.ResourceOptions | None = None,
        provider: HubBlobContainerProvider | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "armEndpoint": args.arm_endpoint,
            "subscriptionId": args.subscription_id,
            "tenantId": args.tenant_id,
            "identityProvider": args.identity_provider,
            "caCertificates": args.ca_certificates or None,
            "resourceGroupName": args.resource_group_name,
            "accountName": args.account_name,
            "blobEndpoint": args.blob_endpoint,
            "containerName": args.container_name,
            **dict.fromkeys(OUTPUTS),
        }
        super().__init__(provider or HubBlobContainerProvider(), name, props, opts)

    @property
    def name(self) -> pulumi.Output[str]:
        """The container's name."""
        return self.__dict__["containerName"]
