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

from .trust import trust_hub_ca

if TYPE_CHECKING:  # the SDK is imported when a client is built, not when the CLI parses its flags
    from azure.storage.blob import BlobServiceClient

CONNECTION_STRING_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"
SAS_TOKEN_VARIABLE = "AZURE_STORAGE_SAS_TOKEN"  # noqa: S105 (a variable name)
CREDENTIAL_DIRECTORY = "/etc/edge-training"
DEFAULT_CREDENTIAL_FILE = f"{CREDENTIAL_DIRECTORY}/storage-credential"
HUB_BLOB_API_VERSION = "2019-07-07"
API_VERSION_VARIABLE = "EDGE_BLOB_API_VERSION"


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
        environ: Mapping[str, str] | None = None,
        **client_options: Any,
    ) -> BlobServiceClient:
        """A client at the Hub's blob API version (`api_version`, else $EDGE_BLOB_API_VERSION, else
        HUB_BLOB_API_VERSION). Staging takes its URL, version and credential and does its own
        listing and reads (reader.py); the client serves anything else a job wants to do."""
        from azure.storage.blob import BlobServiceClient

        env = os.environ if environ is None else environ
        options: dict[str, Any] = {
            "api_version": api_version or env.get(API_VERSION_VARIABLE) or HUB_BLOB_API_VERSION,
            **client_options,
        }
        # An operator's own bundle, else certifi's with the Hub's CA from $EDGE_HUB_CA_FILE (trust.py).
        if bundle := env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or trust_hub_ca(dict(env)):
            options.setdefault("connection_verify", bundle)  # the Hub's own CA, as the reader uses it
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **options)
        if not account_url:
            raise CredentialNotFound(f"a SAS token ({self.source}) needs --account-url")
        return BlobServiceClient(account_url, credential=self.sas_token, **options)


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
