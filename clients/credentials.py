"""One credential story for everything that calls Azure outside the azure-native provider.

The azure-native provider signs in from the `ARM_*` variables (Pulumi's Azure Native installation
and configuration page; Pulumi ESC's azure-login provider exports the same names). The attach
step, the Hub provider and the training CLI read exactly those variables too, so a pipeline sets
one identity once. `DefaultAzureCredential` is not enough on its own: it reads `AZURE_*`, never
`ARM_*`, so in the deploy workflow every credential in its chain is unavailable.

The Hub has a principal of its own, in the same variables under the prefix `HUB_ARM_`: one
process cannot hold two identities in one set of variables.

Mapping (first match wins):
- `<P>USE_OIDC=true`: `ClientAssertionCredential` with a federated token from `<P>OIDC_TOKEN`,
  `<P>OIDC_TOKEN_FILE_PATH`, or requested from `<P>OIDC_REQUEST_URL`/`<P>OIDC_REQUEST_TOKEN`, which
  default to the `ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN` that GitHub Actions sets for jobs with
  `id-token: write` (audience `api://AzureADTokenExchange`, as Microsoft documents for workload
  identity federation with GitHub).
- `<P>CLIENT_SECRET`: `ClientSecretCredential`.
- `<P>CLIENT_CERTIFICATE_PATH` (and `<P>CLIENT_CERTIFICATE_PASSWORD`): `CertificateCredential`.
- `<P>USE_MSI=true`: `ManagedIdentityCredential` (with `<P>CLIENT_ID` for a user-assigned one).
  Neither OIDC nor MSI on an AD FS Hub: refused before any request (`refuse_entra_only_sign_in`).
- nothing set: `DefaultAzureCredential` (a signed-in Azure CLI on a laptop, workload identity, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport

from clients.cloud import PUBLIC, Cloud
from clients.deadline import SignInRetryPolicy

AZURE_PREFIX = "ARM_"
HUB_PREFIX = "HUB_ARM_"
GITHUB_REQUEST_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_REQUEST_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105 (a variable name)
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"


class CredentialConfigError(ValueError):
    """The credential variables are incomplete or contradictory; names the variables."""


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


# Federated (workload identity) tokens and managed identities are issued by Microsoft Entra ID; an
# AD FS Hub's authority is the stamp's own AD FS farm, which knows neither (Microsoft Learn, "Use an
# app identity to access Azure Stack Hub resources": AD FS deployments take a client secret or a
# certificate).
ENTRA_ONLY = ("USE_OIDC", "USE_MSI")


def refuse_entra_only_sign_in(environ: Mapping[str, str], prefix: str = HUB_PREFIX) -> None:
    """Raise before any request when `environ` asks for a sign-in AD FS cannot accept."""
    chosen = [f"{prefix}{name}" for name in ENTRA_ONLY if _true(environ.get(f"{prefix}{name}"))]
    if chosen:
        raise CredentialConfigError(
            f"{' and '.join(chosen)} cannot sign in to an AD FS Hub: workload identity federation and managed "
            "identities issue Microsoft Entra ID tokens, which AD FS does not accept. Use an app registered in the "
            f"Hub's AD FS with {prefix}CLIENT_SECRET or {prefix}CLIENT_CERTIFICATE_PATH (and {prefix}CLIENT_ID)"
        )


def federated_token_source(
    environ: Mapping[str, str], prefix: str = AZURE_PREFIX, transport: HttpTransport | None = None
) -> Callable[[], str]:
    """The function ClientAssertionCredential calls for a fresh federated token, each time it
    needs one: GitHub's tokens live minutes, so none is cached here."""
    if token := environ.get(f"{prefix}OIDC_TOKEN"):
        return lambda: token
    if path := environ.get(f"{prefix}OIDC_TOKEN_FILE_PATH"):
        file = Path(path)
        return lambda: file.read_text().strip()
    url = environ.get(f"{prefix}OIDC_REQUEST_URL") or environ.get(GITHUB_REQUEST_URL)
    bearer = environ.get(f"{prefix}OIDC_REQUEST_TOKEN") or environ.get(GITHUB_REQUEST_TOKEN)
    if not (url and bearer):
        raise CredentialConfigError(
            f"{prefix}USE_OIDC is true but no federated token is available: set {prefix}OIDC_TOKEN or "
            f"{prefix}OIDC_TOKEN_FILE_PATH, or run in a GitHub Actions job with `permissions: id-token: write` "
            f"(which sets {GITHUB_REQUEST_URL} and {GITHUB_REQUEST_TOKEN})"
        )

    def request() -> str:
        from azure.core import PipelineClient
        from azure.core.rest import HttpRequest

        # The sign-in's own bounds: one deadline (SIGNIN_DEADLINE) for the request, its retries and its body.
        client = PipelineClient(base_url=url, policies=[SignInRetryPolicy(retry_total=3)], transport=transport)
        try:
            response = client.send_request(
                HttpRequest(
                    "GET", url, params={"audience": FEDERATION_AUDIENCE}, headers={"Authorization": f"Bearer {bearer}"}
                ),
            )
        finally:
            if transport is None:  # ours to close; a caller's transport stays open for its other users
                client.close()
        if response.status_code != 200:
            raise CredentialConfigError(f"the OIDC token request answered HTTP {response.status_code}")
        try:
            return str(response.json()["value"])
        except (ValueError, KeyError, TypeError):
            raise CredentialConfigError("the OIDC token request answered without a token") from None

    return request


def credential_from_environment(
    environ: Mapping[str, str] | None = None,
    prefix: str = AZURE_PREFIX,
    cloud: Cloud = PUBLIC,
    transport: HttpTransport | None = None,
    tenant_id: str | None = None,
) -> TokenCredential:
    """The credential `environ`'s `<prefix>*` variables describe, signing in at `cloud`.

    `tenant_id`, when given, is the tenant from configuration (the Hub's `hubTenantId`); it wins
    over `<prefix>TENANT_ID`. On AD FS the tenant is always "adfs".

    `transport` is handed to every HTTP call the credential makes (tests pass one that trusts a
    local CA)."""
    env = os.environ if environ is None else environ
    if cloud.uses_adfs:
        refuse_entra_only_sign_in(env, prefix)
    pipeline: dict[str, Any] = {"transport": transport} if transport is not None else {}
    client_id = env.get(f"{prefix}CLIENT_ID") or None
    tenant_id = "adfs" if cloud.uses_adfs else (tenant_id or env.get(f"{prefix}TENANT_ID") or None)
    # AD FS has no instance metadata to discover; Entra's is only needed for Entra's own hosts.
    # Every token request inside a deadline of its own (clients/deadline.py, SignInRetryPolicy).
    signin: dict[str, Any] = {"authority": cloud.authority, "retry_policy_class": SignInRetryPolicy, **pipeline}
    if cloud.uses_adfs:
        signin["disable_instance_discovery"] = True

    def need_principal(kind: str) -> tuple[str, str]:
        missing = [f"{prefix}{n}" for n, v in (("CLIENT_ID", client_id), ("TENANT_ID", tenant_id)) if not v]
        if missing:
            raise CredentialConfigError(f"{kind} sign-in needs {' and '.join(missing)}")
        return str(tenant_id), str(client_id)

    if _true(env.get(f"{prefix}USE_OIDC")):
        from azure.identity import ClientAssertionCredential

        tenant, client = need_principal(f"{prefix}USE_OIDC")
        return ClientAssertionCredential(tenant, client, federated_token_source(env, prefix, transport), **signin)
    if secret := env.get(f"{prefix}CLIENT_SECRET"):
        from azure.identity import ClientSecretCredential

        tenant, client = need_principal("Client secret")
        return ClientSecretCredential(tenant, client, secret, **signin)
    if certificate := env.get(f"{prefix}CLIENT_CERTIFICATE_PATH"):
        from azure.identity import CertificateCredential

        tenant, client = need_principal("Certificate")
        if not Path(certificate).is_file():
            raise CredentialConfigError(f"{prefix}CLIENT_CERTIFICATE_PATH: no file at {certificate}")
        password = env.get(f"{prefix}CLIENT_CERTIFICATE_PASSWORD") or None
        return CertificateCredential(tenant, client, certificate_path=certificate, password=password, **signin)
    if _true(env.get(f"{prefix}USE_MSI")):
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id, **pipeline)
    if client_id:
        raise CredentialConfigError(
            f"{prefix}CLIENT_ID is set but no way to sign in as it: set {prefix}USE_OIDC=true, "
            f"{prefix}CLIENT_SECRET, {prefix}CLIENT_CERTIFICATE_PATH or {prefix}USE_MSI=true"
        )
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(authority=cloud.authority, **pipeline)
