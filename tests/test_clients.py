"""clients/: cloud metadata discovery and the one credential mapping, through the real
azure-core and azure-identity code against the local HTTPS stand-in (tests/harness/arm_server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from azure.identity import ClientAssertionCredential, ClientSecretCredential, DefaultAzureCredential

from clients import cloud as cloud_module
from clients import deadline
from clients.cloud import CloudDiscoveryError, discover
from clients.credentials import (
    FEDERATION_AUDIENCE,
    CredentialConfigError,
    credential_from_environment,
    federated_token_source,
)
from clients.deadline import RETRY_AFTER_MAX
from tests.harness.arm_server import ArmEndpoint, Reply

ROOT = Path(__file__).resolve().parent.parent
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0c1b5c5e-4a4d-4f8e-9d6b-111111111111"
TOKEN_REPLY = Reply(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": "arm-access-token"})


def metadata(login: str, audience: str) -> Reply:
    return Reply(
        200,
        {
            "galleryEndpoint": "https://gallery.example/",
            "graphEndpoint": "https://graph.example/",
            "portalEndpoint": "https://portal.example/",
            "authentication": {"loginEndpoint": login, "audiences": [audience, "https://other.example/"]},
        },
    )


def test_discover_reads_the_metadata_at_the_version_every_cloud_and_hub_answers(arm: ArmEndpoint) -> None:
    arm.fake.script(
        "GET",
        "/metadata/endpoints",
        metadata("https://login.chinacloudapi.cn/", "https://management.core.chinacloudapi.cn/"),
    )
    found = discover(arm.url, transport=arm.transport())
    assert found.login_endpoint == "https://login.chinacloudapi.cn/"
    assert found.arm_scope == "https://management.core.chinacloudapi.cn/.default"
    assert found.authority == "https://login.chinacloudapi.cn"
    assert not found.uses_adfs
    (request,) = arm.fake.requests
    assert request.query == {"api-version": ["2015-01-01"]}
    assert "authorization" not in request.headers  # the document is public; no token is sent


def test_an_adfs_hub_is_recognised_and_its_authority_drops_the_adfs_path(arm: ArmEndpoint) -> None:
    arm.fake.script(
        "GET",
        "/metadata/endpoints",
        metadata("https://adfs.local.azurestack.external/adfs", "https://management.adfs.azurestack.local/4de154de"),
    )
    found = discover(arm.url, transport=arm.transport())
    assert found.uses_adfs and found.authority == "https://adfs.local.azurestack.external"
    assert found.arm_scope == "https://management.adfs.azurestack.local/4de154de/.default"


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (Reply(404, {"error": {"code": "NotFound"}}), "HTTP 404"),
        (Reply(200, {"galleryEndpoint": "x"}), "did not answer with a metadata document"),
        (Reply(200, {"authentication": {"loginEndpoint": "http://login", "audiences": ["a"]}}), "no https login"),
        (Reply(200, {"authentication": {"loginEndpoint": "https://login", "audiences": []}}), "names no audience"),
    ],
)
def test_discovery_failures_name_the_endpoint(arm: ArmEndpoint, reply: Reply, said: str) -> None:
    arm.fake.script("GET", "/metadata/endpoints", reply)
    with pytest.raises(CloudDiscoveryError, match=said):
        discover(arm.url, transport=arm.transport(), retry_total=0)


def test_discovery_does_not_sleep_a_retry_after_beyond_its_deadline(arm: ArmEndpoint) -> None:
    arm.fake.script("GET", "/metadata/endpoints", Reply(503, {"error": {"code": "Busy"}}, {"Retry-After": "3600"}))
    transport = arm.transport()
    with pytest.raises(CloudDiscoveryError, match=r"within 30s: .*HTTP 503 with Retry-After: 3600s, beyond"):
        discover(arm.url, transport=transport, deadline_seconds=30)
    assert transport.slept == [] and len(arm.fake.requests) == 1
    # Within a longer deadline the wait is capped (RETRY_AFTER_MAX), not the hour asked for.
    discover_slept = arm.transport()
    with pytest.raises(CloudDiscoveryError, match=r"HTTP 503"):
        discover(arm.url, transport=discover_slept, retry_total=1, deadline_seconds=120)
    assert discover_slept.slept == [RETRY_AFTER_MAX]


def test_discovery_waits_out_a_short_retry_after_for_real(arm: ArmEndpoint) -> None:
    """The requests transport really sleeps here: 0.3 s, as the busy endpoint asked."""
    from azure.core.pipeline.transport import RequestsTransport

    document = metadata("https://login.microsoftonline.com/", "https://management.core.windows.net/")
    arm.fake.script(
        "GET", "/metadata/endpoints", Reply(503, {"error": {"code": "Busy"}}, {"retry-after-ms": "300"}), document
    )
    real = RequestsTransport(connection_verify=str(arm.ca_file))
    started = time.monotonic()
    assert discover(arm.url, transport=real, deadline_seconds=10).audience == "https://management.core.windows.net/"
    assert 0.3 <= time.monotonic() - started < 5
    real.close()


def test_discovery_of_a_trickled_document_ends_at_its_deadline(arm: ArmEndpoint) -> None:
    document = metadata("https://login.microsoftonline.com/", "https://management.core.windows.net/")
    arm.fake.script("GET", "/metadata/endpoints", Reply(200, document.body, trickle_s=0.1))
    with pytest.raises(CloudDiscoveryError, match=r"within 1s: .*body was still arriving"):
        discover(arm.url, transport=arm.transport(), deadline_seconds=1.0)


def test_discovery_refuses_plain_http_before_any_request() -> None:
    with pytest.raises(CloudDiscoveryError, match="not an https URL"):
        discover("http://127.0.0.1:9")


def test_the_public_cloud_constant_matches_public_azures_metadata() -> None:
    # The values management.azure.com/metadata/endpoints?api-version=2015-01-01 serves.
    assert cloud_module.PUBLIC.arm_scope == "https://management.core.windows.net/.default"
    assert cloud_module.PUBLIC.authority == "https://login.microsoftonline.com"


def workflow_env(name: str) -> dict[str, str]:
    """The `up` job's variables as the workflow sets them, with made-up values for vars.*."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    job = next(j for j in workflow["jobs"].values() if "ARM_USE_OIDC" in (j.get("env") or {}))
    values = {"vars.AZURE_CLIENT_ID": CLIENT, "vars.AZURE_TENANT_ID": TENANT, "vars.AZURE_SUBSCRIPTION_ID": "sub"}
    env = {}
    for key, value in job["env"].items():
        for placeholder, real in values.items():
            value = str(value).replace("${{ " + placeholder + " }}", real)
        env[key] = value
    return env


@pytest.mark.parametrize("workflow", ["deploy.yml", "pull-request.yml"])
def test_the_workflows_exact_variables_sign_in_by_oidc(arm: ArmEndpoint, workflow: str) -> None:
    """What `pulumi up` in the workflow gets: ARM_* from the job, ACTIONS_ID_TOKEN_REQUEST_* from
    GitHub (id-token: write). The federated token is requested, then exchanged at the authority."""
    arm.fake.script("GET", "/metadata/endpoints", metadata(arm.url + "/", "https://management.core.usgovcloudapi.net/"))
    arm.fake.script("GET", "/github/token", Reply(200, {"value": "github-federated-jwt"}))
    arm.fake.script("POST", f"/{TENANT}/oauth2/v2.0/token", TOKEN_REPLY)
    env = workflow_env(workflow) | {
        "ACTIONS_ID_TOKEN_REQUEST_URL": arm.url + "/github/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-request-token",
    }
    cloud = discover(arm.url, transport=arm.transport())
    credential = credential_from_environment(env, cloud=cloud, transport=arm.transport())
    assert isinstance(credential, ClientAssertionCredential)
    assert credential.get_token(cloud.arm_scope).token == "arm-access-token"

    github = next(r for r in arm.fake.requests if r.path == "/github/token")
    assert github.headers["authorization"] == "Bearer runner-request-token"
    assert github.query["audience"] == [FEDERATION_AUDIENCE]
    assert github.query["api-version"] == ["2.0"]  # GitHub's own query is kept
    exchange = next(r for r in arm.fake.requests if r.method == "POST")
    assert exchange.body["client_id"] == CLIENT
    assert exchange.body["client_assertion"] == "github-federated-jwt"
    assert exchange.body["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    # The sovereign cloud's audience, from its metadata, not public Azure's.
    assert exchange.body["scope"] == "https://management.core.usgovcloudapi.net/.default"


def serve_adfs_configuration(arm: ArmEndpoint) -> None:
    """What an AD FS farm serves; MSAL reads it before the first token request."""
    arm.fake.script(
        "GET",
        "/adfs/.well-known/openid-configuration",
        Reply(
            200,
            {
                "issuer": arm.url + "/adfs",
                "token_endpoint": arm.url + "/adfs/oauth2/token",
                "authorization_endpoint": arm.url + "/adfs/oauth2/authorize",
            },
        ),
    )


def test_a_hub_principal_signs_in_at_adfs_with_its_secret(arm: ArmEndpoint) -> None:
    arm.fake.script(
        "GET", "/metadata/endpoints", metadata(arm.url + "/adfs", "https://management.adfs.azurestack.local/4de154de")
    )
    serve_adfs_configuration(arm)
    arm.fake.script("POST", "/adfs/oauth2/token", TOKEN_REPLY)
    env = {"HUB_ARM_CLIENT_ID": CLIENT, "HUB_ARM_CLIENT_SECRET": "hub-secret", "ARM_CLIENT_ID": "someone-else"}
    cloud = discover(arm.url, transport=arm.transport())
    credential = credential_from_environment(env, prefix="HUB_ARM_", cloud=cloud, transport=arm.transport())
    assert isinstance(credential, ClientSecretCredential)
    assert credential.get_token(cloud.arm_scope).token == "arm-access-token"
    exchange = next(r for r in arm.fake.requests if r.method == "POST")
    assert exchange.body["client_id"] == CLIENT and exchange.body["client_secret"] == "hub-secret"
    assert exchange.body["scope"] == "https://management.adfs.azurestack.local/4de154de/.default"
    # No Entra instance discovery against an AD FS Hub (it would leave the network).
    assert all("discovery" not in r.path for r in arm.fake.requests)


def test_sign_in_does_not_wait_out_a_retry_after_beyond_its_deadline(arm: ArmEndpoint) -> None:
    """A token endpoint answering 429 with Retry-After: 3600 fails the sign-in at once; stock
    azure-identity would sleep the hour."""
    arm.fake.script("GET", "/metadata/endpoints", metadata(arm.url + "/adfs", "https://management.adfs.local/1"))
    serve_adfs_configuration(arm)
    arm.fake.script(
        "POST", "/adfs/oauth2/token", Reply(429, {"error": "temporarily_unavailable"}, {"Retry-After": "3600"})
    )
    env = {"HUB_ARM_CLIENT_ID": CLIENT, "HUB_ARM_CLIENT_SECRET": "hub-secret"}
    transport = arm.transport()
    cloud = discover(arm.url, transport=transport)
    credential = credential_from_environment(env, prefix="HUB_ARM_", cloud=cloud, transport=transport)
    with pytest.raises(Exception, match=r"Retry-After: 3600s, beyond the \d+s left"):
        credential.get_token(cloud.arm_scope)
    assert transport.slept == []
    assert len([r for r in arm.fake.requests if r.method == "POST"]) == 1


@pytest.mark.timeout(20)
def test_a_token_answer_trickled_byte_by_byte_ends_at_the_sign_in_deadline(
    arm: ArmEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real time: every byte comes well within the read timeout, so only the sign-in's deadline
    can end the body (deadline.SIGNIN_DEADLINE, cut to 1 s here)."""
    monkeypatch.setattr(deadline, "SIGNIN_DEADLINE", 1.0)
    arm.fake.script("GET", "/metadata/endpoints", metadata(arm.url + "/adfs", "https://management.adfs.local/1"))
    serve_adfs_configuration(arm)
    arm.fake.script("POST", "/adfs/oauth2/token", Reply(200, TOKEN_REPLY.body, trickle_s=0.05))
    env = {"HUB_ARM_CLIENT_ID": CLIENT, "HUB_ARM_CLIENT_SECRET": "hub-secret"}
    cloud = discover(arm.url, transport=arm.transport())
    credential = credential_from_environment(env, prefix="HUB_ARM_", cloud=cloud, transport=arm.transport())
    started = time.monotonic()
    with pytest.raises(Exception, match=r"body was still arriving at the 1s deadline"):
        credential.get_token(cloud.arm_scope)
    assert time.monotonic() - started < 5


@pytest.mark.timeout(20)
def test_a_federated_token_trickled_byte_by_byte_ends_at_the_sign_in_deadline(
    arm: ArmEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadline, "SIGNIN_DEADLINE", 1.0)
    arm.fake.script("GET", "/github/token", Reply(200, {"value": "github-federated-jwt" * 20}, trickle_s=0.05))
    env = {"ARM_OIDC_REQUEST_URL": arm.url + "/github/token", "ARM_OIDC_REQUEST_TOKEN": "runner-request-token"}
    fetch = federated_token_source(env, prefix="ARM_", transport=arm.transport())
    started = time.monotonic()
    with pytest.raises(Exception, match=r"body was still arriving at the 1s deadline"):
        fetch()
    assert time.monotonic() - started < 5


def test_a_configured_tenant_wins_over_the_variable() -> None:
    env = {"HUB_ARM_CLIENT_ID": CLIENT, "HUB_ARM_CLIENT_SECRET": "s", "HUB_ARM_TENANT_ID": "from-env"}
    credential = credential_from_environment(env, prefix="HUB_ARM_", tenant_id=TENANT)
    assert credential._tenant_id == TENANT


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"ARM_USE_OIDC": "true", "ARM_CLIENT_ID": CLIENT}, "ARM_TENANT_ID"),
        ({"ARM_USE_OIDC": "true", "ARM_CLIENT_ID": CLIENT, "ARM_TENANT_ID": TENANT}, "id-token: write"),
        ({"ARM_CLIENT_SECRET": "s", "ARM_TENANT_ID": TENANT}, "ARM_CLIENT_ID"),
        ({"ARM_CLIENT_ID": CLIENT, "ARM_TENANT_ID": TENANT}, "no way to sign in"),
        (
            {"ARM_CLIENT_ID": CLIENT, "ARM_TENANT_ID": TENANT, "ARM_CLIENT_CERTIFICATE_PATH": "/nonexistent.pem"},
            "no file",
        ),
    ],
)
def test_incomplete_variables_are_named(env: dict[str, str], said: str) -> None:
    with pytest.raises(CredentialConfigError, match=said):
        credential_from_environment(env)


def test_no_variables_fall_back_to_the_default_chain() -> None:
    assert isinstance(credential_from_environment({}), DefaultAzureCredential)


def test_an_oidc_token_file_is_read_on_every_request(tmp_path: Path) -> None:
    from clients.credentials import federated_token_source

    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    source = federated_token_source({"ARM_OIDC_TOKEN_FILE_PATH": str(token_file)})
    assert source() == "first"
    token_file.write_text("rotated\n")
    assert source() == "rotated"
