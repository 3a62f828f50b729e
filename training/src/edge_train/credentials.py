"""Where the storage credential comes from: the machine, never the job definition.

The job definition lives in the cloud, so it carries only locations. On the edge VM the operator
provisions the credential in a root-owned file that `python -m training submit` mounts read-only
into the job's container; on a laptop an environment variable does.

Blob clients speak the Hub's storage API version. Azure Stack Hub storage supports a fixed set of
REST versions, far behind Azure's, and rejects the newest one that azure-storage-blob sends by
default; Microsoft's "Azure Stack Hub storage: development tools" guide says to pin the version
explicitly (2019-07-07 for the SDKs of Hub update 2008 and later). `$EDGE_BLOB_API_VERSION`
overrides it for a newer Hub build:
https://learn.microsoft.com/azure-stack/user/azure-stack-storage-dev
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the SDK is imported when a client is built, not when the CLI parses its flags
    from azure.storage.blob import BlobServiceClient

CONNECTION_STRING_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"
SAS_TOKEN_VARIABLE = "AZURE_STORAGE_SAS_TOKEN"  # noqa: S105 (a variable name)
CREDENTIAL_DIRECTORY = "/etc/edge-training"
DEFAULT_CREDENTIAL_FILE = f"{CREDENTIAL_DIRECTORY}/storage-credential"
HUB_BLOB_API_VERSION = "2019-07-07"
API_VERSION_VARIABLE = "EDGE_BLOB_API_VERSION"
DEFAULT_POOL_CONNECTIONS = 32


class CredentialNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class StorageCredential:
    source: str
    """Where it was found, for messages; never the value."""
    connection_string: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)

    def service_client(
        self,
        account_url: str | None,
        api_version: str | None = None,
        pool_connections: int = DEFAULT_POOL_CONNECTIONS,
        environ: Mapping[str, str] | None = None,
        **client_options: Any,
    ) -> BlobServiceClient:
        """A client at the Hub's blob API version (`api_version`, else $EDGE_BLOB_API_VERSION, else
        HUB_BLOB_API_VERSION) with a connection pool as large as the staging workers it serves."""
        from azure.storage.blob import BlobServiceClient

        env = os.environ if environ is None else environ
        transport = _pooled_transport(pool_connections)
        options: dict[str, Any] = {
            "api_version": api_version or env.get(API_VERSION_VARIABLE) or HUB_BLOB_API_VERSION,
            "transport": transport,
            **client_options,
        }
        # What requests would read from the environment on every request, read once (see
        # _pooled_transport): a CA bundle for the Hub's certificates...
        if bundle := os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"):
            options.setdefault("connection_verify", bundle)
        if self.connection_string:
            client = BlobServiceClient.from_connection_string(self.connection_string, **options)
        elif not account_url:
            raise CredentialNotFound(f"a SAS token ({self.source}) needs --account-url")
        else:
            client = BlobServiceClient(account_url, credential=self.sas_token, **options)
        # ... and the proxy for the one host this client talks to (honouring NO_PROXY).
        transport.session.proxies = _environment_proxies(client.url)
        return client


def _environment_proxies(url: str) -> dict[str, str]:
    import requests

    return requests.utils.get_environ_proxies(url)


def _pooled_transport(connections: int) -> Any:
    """requests' default pool keeps 10 connections per host: with more threads than that, every
    extra request opens a TCP connection and closes it after. A pool sized to the workers keeps
    them all alive. Retries stay azure-core's (the adapter itself never retries)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
    # With trust_env, requests re-reads the proxy variables, NO_PROXY and ~/.netrc on every
    # request: about 0.4 ms of CPU per blob here (profiled), over 10% of a small download. The
    # client asks once instead (service_client) for its one host.
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4,
        pool_maxsize=max(1, connections),
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=True)


def _parse(text: str, source: str) -> StorageCredential:
    value = text.strip()
    if "AccountKey=" in value or "SharedAccessSignature=" in value:
        return StorageCredential(source, connection_string=value)
    if "sig=" in value:
        return StorageCredential(source, sas_token=value.lstrip("?"))
    raise CredentialNotFound(f"{source} holds neither a connection string nor a SAS token")


def resolve(credential_file: str | None = None, environ: dict[str, str] | None = None) -> StorageCredential:
    """In order: $AZURE_STORAGE_CONNECTION_STRING, $AZURE_STORAGE_SAS_TOKEN, the credential file
    (--credential-file, default /etc/edge-training/storage-credential)."""
    env = os.environ if environ is None else environ
    if env.get(CONNECTION_STRING_VARIABLE):
        return _parse(env[CONNECTION_STRING_VARIABLE], f"${CONNECTION_STRING_VARIABLE}")
    if env.get(SAS_TOKEN_VARIABLE):
        return _parse(env[SAS_TOKEN_VARIABLE], f"${SAS_TOKEN_VARIABLE}")
    path = Path(credential_file or DEFAULT_CREDENTIAL_FILE)
    try:
        return _parse(path.read_text(), str(path))
    except FileNotFoundError:
        pass
    except PermissionError as error:
        raise CredentialNotFound(f"{path} exists but cannot be read ({error})") from error
    raise CredentialNotFound(
        f"no storage credential: tried ${CONNECTION_STRING_VARIABLE}, ${SAS_TOKEN_VARIABLE} and {path}. "
        f"On the edge VM, put a connection string or SAS token in {DEFAULT_CREDENTIAL_FILE} (mode 0600)"
    )
