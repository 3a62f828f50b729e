"""Which cloud a Resource Manager endpoint belongs to: its login endpoint and token audience.

Endpoints and token scopes are never hard-coded per cloud: they are read from the endpoint's own
metadata document, `GET {arm}/metadata/endpoints?api-version=2015-01-01`. That version is the one
every cloud answers: public Azure and the sovereign clouds, and Azure Stack Hub, whose Resource
Manager serves no newer metadata format (Microsoft Learn, "Use API version profiles with Python
in Azure Stack Hub", which discovers the Hub's endpoints at exactly this version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import UserAgentPolicy
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest

from clients.deadline import BodyDeadlinePolicy, Deadline, DeadlineExceeded, DeadlineRetryPolicy

log = logging.getLogger(__name__)

METADATA_API_VERSION = "2015-01-01"
USER_AGENT = "edge-training"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
DISCOVERY_DEADLINE = 120.0


class CloudDiscoveryError(RuntimeError):
    """The endpoint did not answer with a usable metadata document; says which endpoint and why."""


@dataclass(frozen=True)
class Cloud:
    """What a client needs to sign in to one cloud's Resource Manager."""

    resource_manager: str
    """https://management.azure.com/ on public Azure; the Hub's tenant endpoint on a Hub."""
    login_endpoint: str
    """Microsoft Entra (https://login.microsoftonline.com/) or AD FS (https://adfs.<hub>/adfs)."""
    audience: str
    """The token audience Resource Manager accepts (the first of the metadata's audiences)."""

    @property
    def arm_scope(self) -> str:
        return self.audience.rstrip("/") + "/.default"

    @property
    def uses_adfs(self) -> bool:
        """AD FS (disconnected Hubs): the tenant is "adfs" and there is no instance discovery."""
        return urlsplit(self.login_endpoint).path.rstrip("/").lower().endswith("/adfs")

    @property
    def authority(self) -> str:
        """The authority azure-identity takes: the login host, without AD FS's /adfs path (the
        library appends the tenant, "adfs", itself)."""
        parts = urlsplit(self.login_endpoint)
        return f"{parts.scheme}://{parts.netloc}"


# Public Azure as its metadata describes it; used only where no endpoint is configured.
PUBLIC = Cloud(
    resource_manager="https://management.azure.com/",
    login_endpoint="https://login.microsoftonline.com/",
    audience="https://management.core.windows.net/",
)


def discover(
    arm_endpoint: str,
    transport: HttpTransport | None = None,
    retry_total: int = 3,
    deadline_seconds: float = DISCOVERY_DEADLINE,
) -> Cloud:
    """Read `arm_endpoint`'s metadata. Anonymous: the document is public, and it is what tells us
    where to sign in. Its retries, their waits (Retry-After capped) and the body end by
    `deadline_seconds` (clients/deadline.py)."""
    base = arm_endpoint.rstrip("/")
    if urlsplit(base).scheme != "https":
        raise CloudDiscoveryError(f"{arm_endpoint!r} is not an https URL")
    policies = [
        UserAgentPolicy(base_user_agent=USER_AGENT),
        DeadlineRetryPolicy(
            Deadline(deadline_seconds),
            CONNECT_TIMEOUT,
            READ_TIMEOUT,
            retry_total=retry_total,
            retry_backoff_factor=0.5,
            retry_backoff_max=10,
        ),
        BodyDeadlinePolicy(),
    ]
    url = f"{base}/metadata/endpoints"
    client = PipelineClient(base_url=base, policies=policies, transport=transport)
    try:
        response = client.send_request(HttpRequest("GET", url, params={"api-version": METADATA_API_VERSION}))
        status, text = response.status_code, response.text()
    except DeadlineExceeded as error:
        raise CloudDiscoveryError(f"could not read {url} within {deadline_seconds:g}s: {error}") from None
    except AzureError as error:
        raise CloudDiscoveryError(f"could not reach {url}: {error.message}") from None
    finally:
        if transport is None:  # ours to close; a caller's transport stays open for its other users
            client.close()
    if status != 200:
        raise CloudDiscoveryError(f"{url} answered HTTP {status}: {text[:200]}")
    try:
        document = response.json()
        authentication = document["authentication"]
        login_endpoint = str(authentication["loginEndpoint"])
        audiences = [str(a) for a in authentication["audiences"]]
    except (ValueError, KeyError, TypeError):
        raise CloudDiscoveryError(
            f"{url} did not answer with a metadata document (authentication.loginEndpoint and authentication.audiences)"
        ) from None
    if not audiences or urlsplit(login_endpoint).scheme != "https":
        raise CloudDiscoveryError(f"{url} names no audience or no https login endpoint")
    cloud = Cloud(resource_manager=base + "/", login_endpoint=login_endpoint, audience=audiences[0])
    log.debug("discovered %s", cloud)
    return cloud
