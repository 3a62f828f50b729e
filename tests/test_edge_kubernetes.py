"""The Kubernetes edge mode under mocks: what is declared, in which order, at which API versions,
with which bodies (checked against Microsoft's models of those versions), and what stays secret."""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

import pytest
import yaml
from azure.ai.ml._restclient.arm_ml_service import models as ml
from azure.ai.ml.entities import KubernetesCompute
from azure.mgmt.hybridkubernetes import models as arc_models
from azure.mgmt.kubernetesconfiguration.v2023_05_01 import models as extension_models
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components import edge_kubernetes
from providers.cluster_secrets import ClusterSecretsProvider, public_key_certificate
from tests.conftest import DEV_SECRET_KEYS, dev_stack_config, recorded_stack
from tests.harness import pulumi_mocks
from tests.harness.arm_models import check_body, rest_field_problems
from tests.harness.pulumi_mocks import FAKE_RELAY_CONNECTION_STRING, Recording

GENERIC = "azure-native:resources:Resource"  # the Arc cluster, on the cloud side
HUB_ARM = "pulumi-python:dynamic/edge-training:HubArmResource"  # every Hub resource
EXTENSION = "azure-native:kubernetesconfiguration:Extension"
COMPUTE = "azure-native:machinelearningservices:Compute"
WAIT = "pulumi-python:dynamic/edge-training:ArcConnection"
SECRETS = "pulumi-python:dynamic/edge-training:ClusterSecrets"


def run(overrides: dict[str, Any] | None = None) -> Recording:
    return pulumi_mocks.run_program(dev_stack_config() | (overrides or {}), secret_keys=DEV_SECRET_KEYS)


@pytest.fixture(scope="module")
def recording() -> Recording:
    return recorded_stack()


def cluster_of(recording: Recording) -> pulumi_mocks.Resource:
    (cluster,) = [
        r for r in recording.of_type(GENERIC) if r.inputs["resourceProviderNamespace"] == "Microsoft.Kubernetes"
    ]
    return cluster


def vms(recording: Recording) -> list[pulumi_mocks.Resource]:
    return [r for r in recording.of_type(HUB_ARM) if r.inputs["resourceType"] == "virtualMachines"]


def provider_named(recording: Recording, name: str) -> pulumi_mocks.Resource:
    return next(r for r in recording.of_type("pulumi:providers:azure-native") if r.name == name)


def depends(recording: Recording, resource: pulumi_mocks.Resource, on: pulumi_mocks.Resource) -> bool:
    """`resource` waits for `on`, directly or through the components it depends on."""
    seen, todo = set(), list(resource.dependencies)
    while todo:
        urn = todo.pop()
        if urn == on.urn:
            return True
        if urn in seen:
            continue
        seen.add(urn)
        todo += next((r.dependencies for r in recording.resources if r.urn == urn), [])
    return False


# --- the resources and their order --------------------------------------------------------------


def test_the_cloud_side_is_declared_on_the_azure_provider(recording: Recording) -> None:
    azure = provider_named(recording, "azure")
    for resource in [cluster_of(recording), recording.one(EXTENSION), recording.one(COMPUTE)]:
        assert resource.provider_urn == azure.urn, resource.name
    assert not recording.of_type("pulumi-python:dynamic/edge-training:EdgeCompute")


def test_cluster_then_wait_then_extension_then_roles_then_compute(recording: Recording) -> None:
    cluster, wait = cluster_of(recording), recording.one(WAIT)
    extension, compute = recording.one(EXTENSION), recording.one(COMPUTE)
    (server,) = vms(recording)
    assert depends(recording, script_extension(recording), cluster), "K3s must start after the cluster exists"
    assert depends(recording, wait, cluster) and depends(recording, wait, server)
    assert depends(recording, extension, wait)
    workspace_roles = [r for r in recording.of_type("azure-native:authorization:RoleAssignment") if "-ws-" in r.name]
    assert len(workspace_roles) == 4
    for role in workspace_roles:
        assert depends(recording, role, extension), role.name
        assert depends(recording, compute, role), role.name
    compute_roles = [r for r in recording.of_type("azure-native:authorization:RoleAssignment") if "-compute-" in r.name]
    assert {r.inputs["roleDefinitionId"].rsplit("/", 1)[1] for r in compute_roles} == {
        edge_kubernetes.ACR_PULL,
        edge_kubernetes.STORAGE_BLOB_DATA_CONTRIBUTOR,
    }
    for role in compute_roles:
        assert role.inputs["principalId"] == pulumi_mocks.FAKE_COMPUTE_PRINCIPAL


def test_the_workspace_identity_gets_the_documented_roles_on_cluster_and_relay(recording: Recording) -> None:
    cluster = cluster_of(recording)
    relay = recording.one("azure-native:relay:Namespace")
    granted = {
        (r.inputs["scope"], r.inputs["roleDefinitionId"].rsplit("/", 1)[1])
        for r in recording.of_type("azure-native:authorization:RoleAssignment")
        if r.inputs["principalId"] == pulumi_mocks.FAKE_IDENTITY_PRINCIPAL and "-ws-" in r.name
    }
    assert granted == {
        (cluster.id, edge_kubernetes.READER),
        (cluster.id, edge_kubernetes.KUBERNETES_EXTENSION_CONTRIBUTOR),
        (cluster.id, edge_kubernetes.AKS_CLUSTER_ADMIN),
        (relay.id, edge_kubernetes.AZURE_RELAY_OWNER),
    }


# --- bodies against Microsoft's models -----------------------------------------------------------


def test_the_connected_cluster_body_is_valid_at_its_stable_api_version(recording: Recording) -> None:
    cluster = cluster_of(recording)
    assert cluster.inputs["apiVersion"] == "2026-05-01"
    assert cluster.inputs["resourceType"] == "connectedClusters"
    body = {k: cluster.inputs[k] for k in ("location", "identity", "properties", "tags")}
    # azure-mgmt-hybridkubernetes 2.0.0 is generated for 2026-05-01: no unknown or read-only field...
    nested = {
        arc_models.ConnectedCluster: {
            "properties": arc_models.ConnectedClusterProperties,
            "identity": arc_models.ConnectedClusterIdentity,
        },
        arc_models.ConnectedClusterProperties: {"arcAgentProfile": arc_models.ArcAgentProfile},
    }
    assert rest_field_problems(body, arc_models.ConnectedCluster, nested) == []
    # ...the fields the spec requires, and enum values the version knows.
    assert body["location"] == "westeurope" and body["properties"]["agentPublicKeyCertificate"]
    model = arc_models.ConnectedCluster(body)
    assert model.identity.type == arc_models.ResourceIdentityType.SYSTEM_ASSIGNED
    # Auto-upgrade on, as `az connectedk8s connect` leaves it (test_day_two.py: the pin).
    assert model.properties.arc_agent_profile.agent_auto_upgrade == arc_models.AutoUpgradeOptions.ENABLED
    assert (model.properties.distribution, model.properties.infrastructure) == ("k3s", "azure_stack_hub")


def test_the_model_check_catches_a_read_only_field() -> None:
    body = {
        "location": "x",
        "identity": {"type": "SystemAssigned"},
        "properties": {"agentPublicKeyCertificate": "x", "connectivityStatus": "Connected"},
    }
    nested = {arc_models.ConnectedCluster: {"properties": arc_models.ConnectedClusterProperties}}
    assert rest_field_problems(body, arc_models.ConnectedCluster, nested) == [
        "body.properties.connectivityStatus is read-only"
    ]


def extension_body(resource: pulumi_mocks.Resource) -> dict[str, Any]:
    """The ARM body azure-native sends for the typed Extension's inputs."""
    fields = (
        "extensionType",
        "autoUpgradeMinorVersion",
        "releaseTrain",
        "scope",
        "configurationSettings",
        "configurationProtectedSettings",
    )
    properties = {k: resource.inputs[k] for k in fields}
    if "version" in resource.inputs:  # a pinned version (azuremlExtensionVersion)
        properties["version"] = resource.inputs["version"]
    return {"identity": resource.inputs["identity"], "properties": properties}


def test_the_extension_body_is_valid_at_2023_05_01_and_is_what_the_cli_sends(recording: Recording) -> None:
    extension = recording.one(EXTENSION)
    body = extension_body(extension)
    assert check_body(extension_models.Extension, body) == []
    settings = body["properties"]["configurationSettings"]
    cluster_id, hc = cluster_of(recording).id, recording.one("azure-native:relay:HybridConnection")
    # AzureMLKubernetes.py for connectedClusters, training only, fewer than 3 nodes.
    assert settings == {
        "enableTraining": "True",
        "enableInference": "False",
        "cluster_name": cluster_id,
        "clusterId": cluster_id,
        "prometheus.prometheusSpec.externalLabels.cluster_name": cluster_id,
        "domain": "westeurope.cloudapp.azure.com",
        "location": "westeurope",
        "jobSchedulerLocation": "westeurope",
        "cluster_name_friendly": "arc-edge-dev",
        "servicebus.enabled": "false",
        "relayserver.enabled": "true",
        "nginxIngress.enabled": "false",
        "relayserver.hybridConnectionResourceID": hc.id,
        "relayserver.hybridConnectionName": "arc-edge-dev",
        "clusterPurpose": "DevTest",
        "inferenceRouterHA": "false",
        "installNvidiaDevicePlugin": "False",  # a CPU-only stack (issue 24)
    }
    assert body["properties"]["configurationProtectedSettings"] == {
        "relayServerConnectionString": FAKE_RELAY_CONNECTION_STRING,
        "relayserver.relayConnectionString": FAKE_RELAY_CONNECTION_STRING,
    }
    assert extension.inputs["extensionType"] == "Microsoft.AzureML.Kubernetes"
    assert extension.inputs["scope"] == {"cluster": {"releaseNamespace": "azureml"}}
    assert extension.inputs["identity"] == {"type": "SystemAssigned"}
    assert (extension.inputs["clusterRp"], extension.inputs["clusterResourceName"]) == (
        "Microsoft.Kubernetes",
        "connectedClusters",
    )
    assert extension.inputs["clusterName"] == cluster_of(recording).inputs["resourceName"]


def test_the_relay_is_the_one_the_cli_would_make(recording: Recording) -> None:
    hc = recording.one("azure-native:relay:HybridConnection")
    assert hc.inputs["requiresClientAuthorization"] is True
    rule = recording.one("azure-native:relay:HybridConnectionAuthorizationRule")
    assert rule.inputs["authorizationRuleName"] == "azureml_rw"
    assert sorted(rule.inputs["rights"]) == ["Listen", "Manage", "Send"]
    namespace = recording.one("azure-native:relay:Namespace").inputs["namespaceName"]
    assert namespace == edge_kubernetes.relay_namespace_name(
        "arc-edge-dev", pulumi_mocks.FAKE_SUBSCRIPTION, "rg-edge-training-dev"
    )
    assert len(namespace) <= 50 and namespace.isalnum()


def compute_body(recording: Recording) -> dict[str, Any]:
    """The Kubernetes compute's request body, checked against Azure ML's model of the API version."""
    compute = recording.one(COMPUTE)
    body = {k: compute.inputs[k] for k in ("location", "identity", "properties", "tags")}
    nested = {
        ml.ComputeResource: {"properties": ml.Kubernetes, "identity": ml.ManagedServiceIdentity},
        ml.Kubernetes: {"properties": ml.KubernetesProperties},
        ml.KubernetesProperties: {},
    }
    assert rest_field_problems(body, ml.ComputeResource, nested) == []
    return body


def test_the_compute_body_is_valid_and_matches_azure_ai_mls_kubernetes_compute(recording: Recording) -> None:
    body = compute_body(recording)
    properties = body["properties"]
    assert properties["computeType"] == "Kubernetes"
    assert properties["resourceId"] == cluster_of(recording).id
    # What azure-ai-ml's own KubernetesCompute sends for the same namespace and instance type.
    sdk = (
        KubernetesCompute(
            name="edge-vm",
            resource_id=properties["resourceId"],
            namespace="edge-training",
            properties={
                "defaultInstanceType": "edge-training",
                "instanceTypes": {
                    "edge-training": {
                        "resources": {
                            "requests": {"cpu": "2", "memory": "8Gi"},
                            "limits": {"cpu": "2", "memory": "8Gi"},
                        }
                    }
                },
            },
        )
        ._to_rest_object()
        .as_dict()
    )
    assert properties["properties"] == sdk["properties"]["properties"]


def test_instance_type_namespace_and_deadline_come_from_config() -> None:
    recording = run(
        {
            "instanceTypeCpu": "1500m",
            "instanceTypeMemory": "6Gi",
            "kubernetesNamespace": "churn",
            "arcConnectDeadlineSeconds": 2400,
        }
    )
    assert recording.one(WAIT).inputs["deadlineSeconds"] == 2400
    inner = recording.one(COMPUTE).inputs["properties"]["properties"]
    assert inner["namespace"] == "churn"
    assert inner["instanceTypes"]["edge-training"]["resources"]["limits"] == {"cpu": "1500m", "memory": "6Gi"}


# --- secrets -------------------------------------------------------------------------------------


def vm_custom_data(vm: pulumi_mocks.Resource) -> str:
    assert "secretProperties" in vm.secret_inputs
    cloud_config = base64.b64decode(vm.inputs["secretProperties"]["osProfile"]["customData"]).decode()
    (file,) = yaml.safe_load(cloud_config)["write_files"]
    return base64.b64decode(file["content"]).decode()


def script_extension(recording: Recording, vm_name: str = "vm-edge-dev") -> pulumi_mocks.Resource:
    """The CustomScript extension `first-boot` of the VM: the channel that runs and reruns its script."""
    (extension,) = [
        r
        for r in recording.of_type(HUB_ARM)
        if r.inputs["resourceType"] == "extensions" and r.inputs["parentResourcePath"] == f"virtualMachines/{vm_name}"
    ]
    return extension


def extension_script(extension: pulumi_mocks.Resource) -> str:
    assert "secretProperties" in extension.secret_inputs
    return base64.b64decode(extension.inputs["secretProperties"]["protectedSettings"]["script"]).decode()


def server_custom_data(recording: Recording) -> str:
    """The server's script, as its CustomScript extension carries it (see test_day_two.py)."""
    return extension_script(script_extension(recording))


def test_the_onboarding_key_is_pkcs1_and_matches_the_certificate(recording: Recording) -> None:
    secrets = recording.one(SECRETS)
    assert set(secrets.additional_secret_outputs) == {"onboardingPrivateKey", "joinToken"}
    pem = pulumi_mocks._SECRETS_CACHE["onboardingPrivateKey"]  # what the provider made, under mocks
    # PKCS#1 ("RSA PRIVATE KEY"), the form the Arc chart takes, and it is what the VM receives.
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert pem.splitlines()[1] in server_custom_data(recording)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096
    certificate = cluster_of(recording).inputs["properties"]["agentPublicKeyCertificate"]
    public = serialization.load_der_public_key(base64.b64decode(certificate))
    assert public.public_numbers() == key.public_key().public_numbers()
    # DER PKCS#1 RSAPublicKey (SEQUENCE of n, e), not SubjectPublicKeyInfo.
    assert base64.b64decode(certificate) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )


def _plain_text(resource: pulumi_mocks.Resource) -> str:
    return json.dumps({k: v for k, v in resource.inputs.items() if k not in resource.secret_inputs})


def test_secrets_handed_to_the_harness_are_the_ones_the_program_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    # bench/program_eval.py makes the key once in its parent and hands it to every timed child.
    made = dict(pulumi_mocks._cluster_secrets({}))
    monkeypatch.setattr(pulumi_mocks, "_SECRETS_CACHE", {})
    pulumi_mocks.preset_cluster_secrets({**made, "joinToken": "handed-in-join-token-0123456789"})
    assert "handed-in-join-token-0123456789" in server_custom_data(run())


def test_key_token_and_relay_string_are_secret_everywhere(recording: Recording) -> None:
    token = pulumi_mocks._SECRETS_CACHE["joinToken"]
    for resource in recording.resources:
        text = _plain_text(resource)
        assert "PRIVATE KEY" not in text, resource.name
        assert token not in text, resource.name
        assert "RELAY-SECRET-KEY" not in text, resource.name
    assert "configurationProtectedSettings" in recording.one(EXTENSION).secret_inputs
    exported = json.dumps({k: v.value for k, v in recording.exports.items()})
    assert "PRIVATE KEY" not in exported and token not in exported


def test_the_custom_script_bootstrap_keeps_the_script_secret_too() -> None:
    recording = run({"hubBootstrap": "custom-script"})
    (extension,) = [r for r in recording.of_type(HUB_ARM) if r.inputs["resourceType"] == "extensions"]
    assert "secretProperties" in extension.secret_inputs
    script = extension.inputs["secretProperties"]["protectedSettings"]["script"]
    assert "PRIVATE KEY" in base64.b64decode(script).decode()


def test_the_secrets_provider_is_pickled_without_secrets_and_never_rotates_on_its_own() -> None:
    provider = ClusterSecretsProvider()
    assert b"PRIVATE" not in pickle.dumps(provider)
    olds = {"keyBits": 4096, "rotation": 0, "onboardingPrivateKey": "k"}  # state from before the counters
    assert provider.diff("id", olds, {"keyBits": 4096, "onboardingKeyRotation": 0}).changes is False
    rotated = provider.diff("id", olds, {"keyBits": 4096, "onboardingKeyRotation": 1})
    assert rotated.changes is True and rotated.replaces == []  # in place: see test_day_two.py


def test_a_change_of_the_providers_code_never_rotates_the_arc_key() -> None:
    """Pulumi hands a dynamic provider's diff its inputs with `__provider`, the serialized provider
    (pulumi/dynamic/dynamic.py, PROVIDER_KEY): any edit to this module changes it. A diff that
    compared it would replace the key, onboarding the cluster again, on every code change."""
    from pulumi.dynamic.dynamic import PROVIDER_KEY, serialize_provider

    provider = ClusterSecretsProvider()
    olds = {PROVIDER_KEY: serialize_provider(provider), "keyBits": 4096, "rotation": 0, "onboardingPrivateKey": "k"}
    news = {PROVIDER_KEY: "a different serialization, as after any code change", "keyBits": 4096, "rotation": 0}
    assert olds[PROVIDER_KEY] != news[PROVIDER_KEY]
    result = provider.diff("id", olds, news)
    assert result.changes is False and not result.replaces


def test_public_key_certificate_refuses_a_non_rsa_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="RSA"):
        public_key_certificate(pem.decode())


# --- the Hub side in this mode -------------------------------------------------------------------


def _rules(recording: Recording) -> list[dict[str, Any]]:
    (nsg,) = [r for r in recording.of_type(HUB_ARM) if r.inputs["resourceType"] == "networkSecurityGroups"]
    return [rule["properties"] for rule in nsg.inputs["properties"]["securityRules"]]


def test_nothing_inbound_from_the_internet_ssh_only_from_the_sources_and_outbound_https(
    recording: Recording,
) -> None:
    inbound = [r for r in _rules(recording) if r["direction"] == "Inbound" and r["access"] == "Allow"]
    assert inbound == [
        {
            "priority": 100,
            "direction": "Inbound",
            "access": "Allow",
            "protocol": "Tcp",
            "sourcePortRange": "*",
            "sourceAddressPrefix": "203.0.113.0/24",
            "destinationAddressPrefix": "*",
            "destinationPortRange": "22",
        }
    ]
    outbound = {(r["destinationPortRange"], r["access"]) for r in _rules(recording) if r["direction"] == "Outbound"}
    assert ("443", "Allow") in outbound


def test_no_ssh_sources_means_no_inbound_rule_at_all() -> None:
    recording = run({"hubSshSourceCidrs": []})
    assert [r for r in _rules(recording) if r["direction"] == "Inbound"] == []


def test_the_default_vm_size_leaves_room_for_a_job() -> None:
    recording = run({"hubVmSize": None})
    (vm,) = vms(recording)
    assert vm.inputs["properties"]["hardwareProfile"] == {"vmSize": "Standard_DS3_v2"}


def test_agent_vms_join_the_cluster_without_onboarding_or_public_ips() -> None:
    recording = run({"hubAgentCount": 2})
    names = sorted(v.inputs["resourceName"] for v in vms(recording))
    assert names == ["vm-agent1-edge-dev", "vm-agent2-edge-dev", "vm-edge-dev"]
    wait = recording.one(WAIT)
    token = pulumi_mocks._SECRETS_CACHE["joinToken"]
    for vm in vms(recording):
        assert depends(recording, wait, vm), vm.name
        assert "secretProperties" in vm.secret_inputs
        if vm.inputs["resourceName"] == "vm-edge-dev":
            continue
        script = extension_script(script_extension(recording, vm.inputs["resourceName"]))
        assert "PRIVATE KEY" not in script  # no Arc onboarding on agents
        assert token in script and edge_kubernetes.k3s_server_url("dev") in script
        nic = next(
            r
            for r in recording.of_type(HUB_ARM)
            if r.id == vm.inputs["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        )
        assert "publicIPAddress" not in json.dumps(nic.inputs["properties"])
    # Three nodes: the CLI's small-cluster defaults no longer apply.
    settings = recording.one(EXTENSION).inputs["configurationSettings"]
    assert "clusterPurpose" not in settings


# --- outputs, and the other mode ----------------------------------------------------------------


def test_the_mode_is_exported_for_the_training_cli(recording: Recording) -> None:
    assert recording.exports["edgeComputeMode"].value == "kubernetes"
    assert recording.exports["computeId"].value == recording.one(COMPUTE).id
    assert recording.exports["kubernetesNamespace"].value == "edge-training"
    vm_mode = run({"edgeComputeMode": "virtual-machine", "hubVmSize": None})
    assert vm_mode.exports["edgeComputeMode"].value == "virtual-machine"


def test_the_virtual_machine_mode_declares_nothing_of_the_kubernetes_mode() -> None:
    recording = run({"edgeComputeMode": "virtual-machine", "hubVmSize": None})
    assert recording.of_type("pulumi-python:dynamic/edge-training:EdgeCompute")
    for token in (EXTENSION, COMPUTE, WAIT, SECRETS, "azure-native:relay:Namespace"):
        assert not recording.of_type(token), token
    assert not [
        r for r in recording.of_type(GENERIC) if r.inputs["resourceProviderNamespace"] == "Microsoft.Kubernetes"
    ]
    outbound = [r for r in _rules(recording) if r["direction"] == "Outbound"]
    assert outbound == []  # the NSG exactly as before
