"""hubCaCertificates: the Hub's endpoints signed by a private CA that certifi does not hold.

Every path that talks to the Hub fails without the CA and works with it: the Hub provider
(metadata, AD FS sign-in, Resource Manager), the blob container (listKeys and the blob service),
and a job's staging in a subprocess (`EDGE_HUB_CA_FILE`, as the cluster mounts it), against
Azurite over HTTPS with a certificate from the private CA. Certifi's roots are kept, never replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from azure.storage.blob import BlobServiceClient

from clients.deadline import Deadline, DeadlineRetryPolicy, certificate_refused
from clients.trust import CaCertificatesError, bundle_file, parse_ca_certificates
from components import config as stack_config
from providers import hub_blob_container
from providers.hub_arm_resource import HUB_API_VERSIONS, HubArmError, HubArmResourceProvider
from providers.hub_blob_container import HubBlobContainerError, HubBlobContainerProvider
from tests.conftest import DEV_SECRET_KEYS, ROOT, dev_stack_config
from tests.harness import services
from tests.harness.hub_arm import HubArm, serve_hub_arm
from tests.harness.private_ca import PrivateCa, make_private_ca
from tests.harness.raw_http import RawHttpServer
from tests.test_training_jobs import arm, workspace  # noqa: F401 (fixtures)
from training import emulator
from training.src.edge_train.trust import HUB_CA_FILE_VARIABLE

TRUST_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", HUB_CA_FILE_VARIABLE)
HUB_VARIABLES = ("CLIENT_ID", "CLIENT_SECRET", "CLIENT_CERTIFICATE_PATH", "USE_OIDC", "USE_MSI", "TENANT_ID")


@pytest.fixture(scope="module")
def blob_pki(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return make_private_ca(tmp_path_factory.mktemp("blob-pki"), "Contoso Storage CA (test)")


@pytest.fixture(scope="module")
def tls_azurite(tmp_path_factory: pytest.TempPathFactory, blob_pki: PrivateCa) -> Iterator[services.Azurite]:
    """Azurite over HTTPS, its certificate signed by the private CA: a Hub's blob endpoint."""
    started = services.start_azurite(
        tmp_path_factory.mktemp("tls-azurite"), tls=(blob_pki.server_cert, blob_pki.server_key)
    )
    yield started
    started.stop()


@pytest.fixture
def no_trust_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TRUST_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_trust_settings: None) -> Iterator[HubArm]:
    for name in HUB_VARIABLES:
        monkeypatch.delenv(f"HUB_ARM_{name}", raising=False)
    with serve_hub_arm(tmp_path) as stand_in:
        monkeypatch.setenv("HUB_ARM_CLIENT_ID", stand_in.client_id)
        monkeypatch.setenv("HUB_ARM_CLIENT_SECRET", stand_in.client_secret)
        stand_in.storage_keys[emulator.ACCOUNT] = emulator.ACCOUNT_KEY
        yield stand_in


def hub_ca(hub: HubArm) -> str:
    return hub.ca_file.read_text()


# --- what hubCaCertificates accepts --------------------------------------------------------------


def test_ca_certificates_are_checked_and_bad_ones_named(tmp_path: Path, blob_pki: PrivateCa) -> None:
    other = make_private_ca(tmp_path / "other", "Contoso Issuing CA (test)")
    assert len(parse_ca_certificates(blob_pki.ca_pem + other.ca_pem)) == 2
    with pytest.raises(CaCertificatesError, match=r"certificate 1 \(CN=127.0.0.1\) is not a CA certificate"):
        parse_ca_certificates(blob_pki.leaf_pem)  # a server's own certificate
    key = blob_pki.server_key.read_text()
    with pytest.raises(CaCertificatesError, match="block 2 is a private key") as caught:
        parse_ca_certificates(blob_pki.ca_pem + key)
    assert key.splitlines()[1] not in str(caught.value)
    with pytest.raises(CaCertificatesError, match="holds no PEM block"):
        parse_ca_certificates("MIIB...")
    with pytest.raises(CaCertificatesError, match="does not parse"):
        parse_ca_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CaCertificatesError, match="outside its PEM blocks"):
        parse_ca_certificates("see attached\n" + blob_pki.ca_pem)


def test_the_stack_config_refuses_a_server_certificate_as_the_hubs_ca(blob_pki: PrivateCa) -> None:
    def parse(value: str) -> stack_config.StackConfig:
        raw = dev_stack_config({"hubCaCertificates": value})
        return stack_config.parse(raw, stack="dev", organization="acme", secret_keys=DEV_SECRET_KEYS)

    assert parse(blob_pki.ca_pem).hub.ca_certificates == blob_pki.ca_pem.strip()
    assert parse("").hub.ca_certificates == ""
    with pytest.raises(stack_config.ConfigError) as caught:
        parse(blob_pki.leaf_pem)
    assert [p.key for p in caught.value.problems] == ["hubCaCertificates"]
    assert "not a CA certificate" in caught.value.problems[0].reason


def test_the_bundle_is_certifis_roots_followed_by_the_hubs(tmp_path: Path, blob_pki: PrivateCa) -> None:
    bundle = bundle_file(blob_pki.ca_pem, tmp_path).read_text()
    public = Path(certifi.where()).read_text().rstrip("\n")
    assert bundle.startswith(public)  # nothing of certifi's is dropped
    assert bundle.rstrip().endswith(blob_pki.ca_pem.strip())
    assert bundle_file(blob_pki.ca_pem, tmp_path) == bundle_file(blob_pki.ca_pem, tmp_path)  # one file per bundle
    with pytest.raises(CaCertificatesError):
        bundle_file(blob_pki.leaf_pem, tmp_path)


# --- the Hub provider and the container, with their own transports (no test transport) ----------


def nsg(hub: HubArm, **changes: Any) -> dict[str, Any]:
    return {
        "armEndpoint": hub.url,
        "subscriptionId": hub.subscription_id,
        "tenantId": None,
        "identityProvider": "adfs",
        "caCertificates": None,
        "resourceProviderNamespace": "Microsoft.Network",
        "resourceType": "networkSecurityGroups",
        "parentResourcePath": "",
        "resourceName": "nsg-ca-test",
        "resourceGroupName": hub.resource_group,
        "apiVersion": HUB_API_VERSIONS["Microsoft.Network"],
        "location": "local",
        "tags": {"project": "edge-training", "stack": "test"},
        "properties": {"securityRules": []},
        **changes,
    }


def test_the_hub_provider_trusts_the_hubs_ca_only_when_given(hub: HubArm) -> None:
    provider = HubArmResourceProvider()  # its own transport, as in `pulumi up`
    with pytest.raises(HubArmError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        provider.create(nsg(hub))
    assert not hub.requests  # no TLS handshake completed, so nothing was asked
    assert provider.check({}, nsg(hub, caCertificates=hub_ca(hub))).failures == []
    created = provider.create(nsg(hub, caCertificates=hub_ca(hub)))
    assert created.id.lower().endswith("/networksecuritygroups/nsg-ca-test")
    # Metadata, AD FS sign-in and Resource Manager all went over the verified connection.
    paths = {r.path for r in hub.requests}
    assert {"/metadata/endpoints", "/adfs/oauth2/token"} <= paths
    failures = provider.check({}, nsg(hub, caCertificates=make_private_ca(hub.ca_file.parent / "x").leaf_pem)).failures
    assert [f.property for f in failures] == ["caCertificates"]


def test_the_blob_container_trusts_the_hub_and_its_blob_endpoint_through_one_bundle(
    hub: HubArm, tls_azurite: services.Azurite, blob_pki: PrivateCa
) -> None:
    HubArmResourceProvider().create(
        nsg(
            hub,
            caCertificates=hub_ca(hub),
            resourceProviderNamespace="Microsoft.Storage",
            resourceType="storageAccounts",
            resourceName=emulator.ACCOUNT,
            apiVersion=HUB_API_VERSIONS["Microsoft.Storage"],
            sku={"name": "Standard_LRS"},
            kind="Storage",
            properties={"supportsHttpsTrafficOnly": True},
        )
    )
    props = {
        "armEndpoint": hub.url,
        "subscriptionId": hub.subscription_id,
        "tenantId": None,
        "identityProvider": "adfs",
        "resourceGroupName": hub.resource_group,
        "accountName": emulator.ACCOUNT,
        "blobEndpoint": f"https://127.0.0.1:{tls_azurite.port}/{emulator.ACCOUNT}/",
        "containerName": f"c{uuid.uuid4().hex[:12]}",
    }
    provider = HubBlobContainerProvider()
    # The Hub's CA alone: listKeys works, the blob endpoint (another CA of the operator's) does not.
    with pytest.raises(HubBlobContainerError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        provider.create({**props, "caCertificates": hub_ca(hub)})
    both = hub_ca(hub) + blob_pki.ca_pem
    assert provider.check({}, {**props, "caCertificates": both}).failures == []
    created = provider.create({**props, "caCertificates": both})
    blobs = BlobServiceClient(
        tls_azurite.blob_endpoint.replace("http://", "https://"),
        credential={"account_name": emulator.ACCOUNT, "account_key": emulator.ACCOUNT_KEY},
        connection_verify=str(blob_pki.ca_file),
    )
    assert blobs.get_container_client(props["containerName"]).exists()
    provider.delete(created.id, created.outs or {})
    assert not blobs.get_container_client(props["containerName"]).exists()


# --- a certificate refused is not retried ------------------------------------------------------------


def refusing_and_closing(tmp_path: Path) -> tuple[RawHttpServer, RawHttpServer]:
    """A TLS server whose CA nobody here trusts, and a plain one that hangs up on every request."""
    pki = make_private_ca(tmp_path / "untrusted")
    return RawHttpServer(lambda _: False, tls=(pki.server_cert, pki.server_key)), RawHttpServer(lambda _: False)


def test_the_deadline_retry_policy_does_not_retry_a_certificate_refused(tmp_path) -> None:
    """Retried, the same certificate would be refused again after every backoff; a connection
    that fails otherwise is still retried."""
    from azure.core import PipelineClient
    from azure.core.exceptions import AzureError
    from azure.core.pipeline.transport import RequestsTransport
    from azure.core.rest import HttpRequest

    untrusted, hanging_up = refusing_and_closing(tmp_path)
    with untrusted, hanging_up:
        for server in (untrusted, hanging_up):
            policy = DeadlineRetryPolicy(Deadline(30), 5, 5, retry_total=2, retry_backoff_factor=0.01)
            transport = RequestsTransport(connection_verify=certifi.where())
            client = PipelineClient(server.url, policies=[policy], transport=transport)
            with client, pytest.raises(AzureError) as failed:
                client.send_request(HttpRequest("GET", f"{server.url}/x"))
            assert certificate_refused(failed.value) == (server is untrusted), failed.value
        assert untrusted.connections == 1
        assert hanging_up.connections == 3  # retry_total=2: the first attempt and two more


def test_the_blob_containers_storage_client_does_not_retry_a_certificate_refused(tmp_path) -> None:
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient

    untrusted, hanging_up = refusing_and_closing(tmp_path)
    with untrusted, hanging_up:
        for server in (untrusted, hanging_up):
            policy = hub_blob_container._retry_policy()
            policy.get_backoff_time = lambda settings: 0.0  # the waits are not under test
            client = ContainerClient(
                server.url, "c", credential={"account_name": "a", "account_key": "a2V5"},
                retry_policy=policy, connection_verify=certifi.where(),
            )  # fmt: skip
            with client, pytest.raises(AzureError):
                client.exists()
        assert untrusted.connections == 1
        assert hanging_up.connections > 1  # an answer cut off is retried


# --- a job's staging, in a process of its own ------------------------------------------------------

STAGE = """
import sys
import edge_train
staged = edge_train.stage(sys.argv[1], sys.argv[2])
print("staged", len(staged.blobs))
"""


def test_a_jobs_staging_trusts_the_mounted_hub_ca_next_to_certifi(
    tmp_path: Path, tls_azurite: services.Azurite, blob_pki: PrivateCa
) -> None:
    endpoint = f"https://127.0.0.1:{tls_azurite.port}/{emulator.ACCOUNT}"
    container = f"c{uuid.uuid4().hex[:12]}"
    BlobServiceClient(
        endpoint,
        credential={"account_name": emulator.ACCOUNT, "account_key": emulator.ACCOUNT_KEY},
        connection_verify=str(blob_pki.ca_file),
    ).create_container(container).upload_blob("rows/part-0.csv", b"a,b\n1,2\n")
    mounted = tmp_path / "etc-edge-training" / "hub-ca.pem"  # what the node mounts at /etc/edge-training
    mounted.parent.mkdir()
    mounted.write_text(blob_pki.ca_pem)
    environ = {k: v for k, v in os.environ.items() if k not in TRUST_VARIABLES}
    environ |= {
        "PYTHONPATH": str(ROOT / "training" / "src"),
        "AZURE_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=https;AccountName={emulator.ACCOUNT};AccountKey={emulator.ACCOUNT_KEY};"
            f"BlobEndpoint={endpoint};"
        ),
        "TMPDIR": str(tmp_path),
    }

    def run(extra: dict[str, str], cache: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", STAGE, f"hub://{container}/rows/", str(tmp_path / cache)]
        return subprocess.run(argv, env=environ | extra, capture_output=True, text=True, timeout=120, check=False)

    refused = run({}, "without")
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr[-2000:]
    trusted = run({HUB_CA_FILE_VARIABLE: str(mounted)}, "with")
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert trusted.stdout.strip() == "staged 1"
    assert (tmp_path / "with" / "rows" / "part-0.csv").read_bytes() == b"a,b\n1,2\n"


def test_a_jobs_own_blob_client_trusts_the_mounted_hub_ca(
    tmp_path: Path, tls_azurite: services.Azurite, blob_pki: PrivateCa, no_trust_settings: None
) -> None:
    """Job code that uses the blob client itself, without staging, is covered too."""
    from training.src.edge_train import credentials

    mounted = tmp_path / "hub-ca.pem"
    mounted.write_text(blob_pki.ca_pem)
    connection = (
        f"DefaultEndpointsProtocol=https;AccountName={emulator.ACCOUNT};AccountKey={emulator.ACCOUNT_KEY};"
        f"BlobEndpoint=https://127.0.0.1:{tls_azurite.port}/{emulator.ACCOUNT};"
    )
    environ = {"AZURE_STORAGE_CONNECTION_STRING": connection, HUB_CA_FILE_VARIABLE: str(mounted)}
    service = credentials.resolve(None, environ).service_client(None, environ=environ, retry_total=0)
    assert isinstance(list(service.list_containers()), list)
    untrusting = credentials.resolve(None, environ).service_client(
        None, environ={k: v for k, v in environ.items() if k != HUB_CA_FILE_VARIABLE}, retry_total=0
    )
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        list(untrusting.list_containers())


# --- the CLI and the jobs it submits ------------------------------------------------------------------


@pytest.fixture
def clean_trust_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sets REQUESTS_CA_BUNDLE/SSL_CERT_FILE in its own process: restored after the test."""
    for name in TRUST_VARIABLES:
        monkeypatch.setenv(name, "recorded")
        monkeypatch.delenv(name)


def test_a_job_gets_the_mounted_ca_path_and_the_cli_trusts_the_hub_ca(
    tmp_path: Path,
    workspace: Any,  # noqa: F811 (the fixture imported above)
    clean_trust_environment: None,
    blob_pki: PrivateCa,
) -> None:
    from tests.test_training_jobs import job_put, submit
    from training import cli, jobs

    assert submit(tmp_path, "--prefix", "churn/", hubCaCertificates=blob_pki.ca_pem) == cli.OK
    body = job_put(workspace).body["properties"]
    assert body["environmentVariables"]["EDGE_HUB_CA_FILE"] == jobs.HUB_CA_FILE == "/etc/edge-training/hub-ca.pem"
    assert "BEGIN CERTIFICATE" not in json.dumps(body)  # a path, no certificate material
    bundle = Path(os.environ["REQUESTS_CA_BUNDLE"]).read_text()
    assert bundle.startswith(Path(certifi.where()).read_text().rstrip("\n")) and blob_pki.ca_pem.strip() in bundle
    assert os.environ["SSL_CERT_FILE"] == os.environ["REQUESTS_CA_BUNDLE"]


def test_without_a_hub_ca_jobs_and_the_cli_are_unchanged(
    tmp_path: Path,
    workspace: Any,  # noqa: F811 (the fixture imported above)
    clean_trust_environment: None,
) -> None:
    from tests.test_training_jobs import job_put, submit
    from training import cli

    assert submit(tmp_path, "--prefix", "churn/") == cli.OK
    assert "EDGE_HUB_CA_FILE" not in job_put(workspace).body["properties"]["environmentVariables"]
    assert "REQUESTS_CA_BUNDLE" not in os.environ


# --- the model server (training/serving/score.py), as the edge deploy mounts the CA ---------------------

SERVE = """
import sys, urllib.request
import requests
import score
try:
    score.init()  # trusts the CA first; then finds no model in the empty folder
except FileNotFoundError as error:
    print("init:", error, file=sys.stderr)
print(urllib.request.urlopen(sys.argv[1], timeout=10).status, requests.get(sys.argv[1], timeout=10).status_code)
"""


def test_the_model_server_trusts_the_mounted_hub_ca_next_to_certifi(tmp_path: Path) -> None:
    from tests.harness.arm_server import Reply, https_server

    models = tmp_path / "empty-model-dir"
    models.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in TRUST_VARIABLES}
    environ |= {"PYTHONPATH": str(ROOT / "training" / "serving"), "TMPDIR": str(tmp_path),
                "AZUREML_MODEL_DIR": str(models)}  # fmt: skip
    with https_server(tmp_path, lambda *_: Reply(200, {"ok": True}), "hub-endpoint") as (url, ca_file):

        def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-c", SERVE, url]
            return subprocess.run(argv, env=environ | extra, capture_output=True, text=True, timeout=120, check=False)

        refused = run({})
        assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr[-2000:]
        mounted = tmp_path / "etc-edge-training" / "hub-ca.pem"  # the ConfigMap's file, or the VM's
        mounted.parent.mkdir()
        mounted.write_text(ca_file.read_text())
        trusted = run({"EDGE_HUB_CA_FILE": str(mounted)})
        assert trusted.returncode == 0, trusted.stderr[-2000:]
        assert trusted.stdout.split() == ["200", "200"]
    bundle = (tmp_path / "edge-training-ca-bundle.pem").read_text()
    assert bundle.startswith(Path(certifi.where()).read_text().rstrip("\n"))  # certifi kept whole, first
    assert bundle.rstrip().endswith(ca_file.read_text().strip())


def test_the_model_server_names_a_mounted_ca_it_cannot_use(tmp_path: Path) -> None:
    from training.serving import score

    with pytest.raises(score.TrustError, match=r"cannot read .*missing\.pem"):
        score.trust_hub_ca({"EDGE_HUB_CA_FILE": str(tmp_path / "missing.pem")}, tmp_path)
    (tmp_path / "empty.pem").write_text("\n")
    with pytest.raises(score.TrustError, match=r"empty\.pem holds no PEM certificate"):
        score.trust_hub_ca({"EDGE_HUB_CA_FILE": str(tmp_path / "empty.pem")}, tmp_path)
    environ = {"REQUESTS_CA_BUNDLE": "/operator/own.pem"}
    assert score.trust_hub_ca(environ, tmp_path) is None and environ == {"REQUESTS_CA_BUNDLE": "/operator/own.pem"}


def test_an_operators_own_bundle_setting_wins_in_the_model_server(tmp_path: Path, blob_pki: PrivateCa) -> None:
    from training.serving import score

    environ = {"EDGE_HUB_CA_FILE": str(blob_pki.ca_file), "REQUESTS_CA_BUNDLE": "/operator/own.pem"}
    bundle = score.trust_hub_ca(environ, tmp_path)
    assert environ["REQUESTS_CA_BUNDLE"] == "/operator/own.pem" and environ["SSL_CERT_FILE"] == bundle


def test_the_model_servers_copy_of_the_trust_rule_makes_the_jobs_bundle(tmp_path: Path, blob_pki: PrivateCa) -> None:
    """score.py travels alone into the image, so it keeps its own copy of edge_train/trust.py's
    rule: both must write the same bundle, set the same variables and refuse alike."""
    from training.serving import score
    from training.src.edge_train import trust

    served: dict[str, str] = {HUB_CA_FILE_VARIABLE: str(blob_pki.ca_file)}
    job: dict[str, str] = dict(served)
    served_bundle = score.trust_hub_ca(served, tmp_path)
    job_bundle = trust.trust_hub_ca(job)
    assert served_bundle and job_bundle
    assert Path(served_bundle).read_text() == Path(job_bundle).read_text()
    assert score.BUNDLE_VARIABLES == trust.BUNDLE_VARIABLES and score.HUB_CA_FILE_VARIABLE == HUB_CA_FILE_VARIABLE
    assert {k: v == served_bundle for k, v in served.items() if k != HUB_CA_FILE_VARIABLE} == dict.fromkeys(
        trust.BUNDLE_VARIABLES, True
    )
    (tmp_path / "empty.pem").write_text("\n")
    for missing in (tmp_path / "missing.pem", tmp_path / "empty.pem"):
        with pytest.raises(score.TrustError) as served_error:
            score.trust_hub_ca({HUB_CA_FILE_VARIABLE: str(missing)}, tmp_path)
        with pytest.raises(trust.TrustError) as job_error:
            trust.trust_hub_ca({HUB_CA_FILE_VARIABLE: str(missing)})
        assert str(served_error.value) == str(job_error.value)
