"""The compute namespace's manifests, validated offline.

Built-in kinds against Kubernetes's own OpenAPI schemas at the K3s minor we pin (kubernetes-validate,
strict: unknown fields are errors), the InstanceType against the schema we keep for it
(edge/schemas/instancetype.schema.json, from Microsoft's instance type documentation).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from edge import cluster_manifests, first_boot
from edge.cluster_manifests import InstanceTypeSpec, ManifestError
from training.src.edge_train import credentials

SCHEMA = json.loads((Path(cluster_manifests.__file__).parent / "schemas" / "instancetype.schema.json").read_text())
INSTANCE_TYPES = [
    InstanceTypeSpec("small", "500m", "2Gi", "2", "6Gi"),
    InstanceTypeSpec("gpu", "1", "8Gi", "4", "24Gi", gpu=1),
]
MANIFESTS = cluster_manifests.cluster_manifests("edge-training", INSTANCE_TYPES, cache_size_gi=80)


def by_kind(kind: str) -> list[dict]:
    return [m for m in MANIFESTS if m["kind"] == kind]


def validate(manifest: dict) -> None:
    if manifest["kind"] == "InstanceType":
        jsonschema.validate(manifest, SCHEMA, cls=jsonschema.Draft202012Validator)
    else:
        kubernetes_validate.validate(manifest, first_boot.K3S_KUBERNETES_MINOR, strict=True)


def test_the_pinned_k3s_minor_is_what_manifests_are_validated_at() -> None:
    assert first_boot.K3S_VERSION.startswith(f"v{first_boot.K3S_KUBERNETES_MINOR}.")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: f"{m['kind']}-{m['metadata']['name']}")
def test_every_manifest_is_valid_for_the_pinned_kubernetes(manifest: dict) -> None:
    validate(manifest)


def test_the_instance_type_schema_is_itself_valid_and_strict() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    (small, gpu) = by_kind("InstanceType")
    assert small["spec"]["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "6Gi"},
    }
    assert gpu["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in gpu["spec"]["resources"]["requests"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m["spec"]["resources"]["requests"].update({"nvidia.com/gpu": 1}),  # GPUs in limits only
        lambda m: m["spec"]["resources"]["limits"].pop("memory"),
        lambda m: m["spec"]["resources"].update({"limit": {}}),  # a typo'd field
        lambda m: m["spec"]["resources"]["requests"].update({"memory": "2G"}),
        lambda m: m.update({"apiVersion": "amlarc.azureml.com/v1"}),
    ],
)
def test_the_instance_type_schema_refuses_what_the_extension_would_misread(mutate) -> None:
    manifest = json.loads(json.dumps(by_kind("InstanceType")[1]))
    mutate(manifest)
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


def test_strict_validation_refuses_unknown_fields_in_built_in_kinds() -> None:
    pvc = json.loads(json.dumps(by_kind("PersistentVolumeClaim")[0]))
    pvc["spec"]["storageClass"] = ""  # not storageClassName
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pvc)


def _claim(name: str) -> dict:
    return next(m for m in by_kind("PersistentVolumeClaim") if m["metadata"]["name"] == name)


def _volume_of(claim: dict) -> dict:
    return next(m for m in by_kind("PersistentVolume") if m["metadata"]["name"] == claim["spec"]["volumeName"])


def test_the_credential_is_mounted_into_jobs_where_train_py_reads_it() -> None:
    claim = _claim("credential")
    assert claim["metadata"]["namespace"] == "edge-training"
    assert claim["metadata"]["labels"]["ml.azure.com/pvc"] == "true"
    assert claim["metadata"]["annotations"]["ml.azure.com/mountpath"] == credentials.CREDENTIAL_DIRECTORY
    assert f"{credentials.CREDENTIAL_DIRECTORY}/{cluster_manifests.CREDENTIAL_KEY}" == (
        credentials.DEFAULT_CREDENTIAL_FILE
    )
    volume = _volume_of(claim)
    assert volume["spec"]["hostPath"]["path"] == cluster_manifests.CREDENTIAL_HOST_PATH
    assert volume["spec"]["claimRef"] == {"namespace": "edge-training", "name": "credential"}


def test_the_staging_cache_is_on_the_nodes_disk_and_mounted_at_the_same_path() -> None:
    claim = _claim("staging-cache")
    assert claim["metadata"]["labels"]["ml.azure.com/pvc"] == "true"
    assert claim["metadata"]["annotations"]["ml.azure.com/mountpath"] == "/var/cache/edge-training"
    assert claim["spec"]["resources"]["requests"]["storage"] == "80Gi"
    volume = _volume_of(claim)
    assert volume["spec"]["hostPath"] == {"path": "/var/cache/edge-training", "type": "DirectoryOrCreate"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_claims_bind_only_to_their_own_volumes() -> None:
    # storageClassName "" on both sides: K3s's default local-path class must not provision others.
    for claim in by_kind("PersistentVolumeClaim"):
        assert claim["spec"]["storageClassName"] == ""
        assert _volume_of(claim)["spec"]["storageClassName"] == ""


def test_the_secret_ships_empty_and_the_copier_fills_the_credential_directory() -> None:
    (secret,) = by_kind("Secret")
    assert "data" not in secret and "stringData" not in secret
    (copier,) = by_kind("DaemonSet")
    pod = copier["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secret"]["secret"] == {
        "secretName": secret["metadata"]["name"],
        "optional": True,
        "defaultMode": 0o400,
    }
    assert volumes["credential"]["hostPath"]["path"] == cluster_manifests.CREDENTIAL_HOST_PATH
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False


def test_the_copy_loop_copies_changed_keys_0600_and_prints_no_value(tmp_path: Path) -> None:
    """The DaemonSet's shell loop, run once for real against two directories."""
    import subprocess

    (copier,) = by_kind("DaemonSet")
    loop = copier["spec"]["template"]["spec"]["containers"][0]["command"][2]
    once = loop.replace("while true; do", "for _ in 1; do").replace("/secret", str(tmp_path / "secret"))
    once = once.replace("/credential", str(tmp_path / "credential")).replace(
        f"sleep {cluster_manifests.COPY_INTERVAL_SECONDS}", ":"
    )
    (tmp_path / "secret").mkdir()
    (tmp_path / "credential").mkdir()
    (tmp_path / "secret" / "storage-credential").write_text("DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0")
    result = subprocess.run(["sh", "-c", once], capture_output=True, text=True, timeout=30, check=True)
    copied = tmp_path / "credential" / "storage-credential"
    assert copied.read_text() == "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0"
    assert copied.stat().st_mode & 0o777 == 0o600
    assert "AccountKey" not in result.stdout + result.stderr
    again = subprocess.run(["sh", "-c", once], capture_output=True, text=True, timeout=30, check=True)
    assert again.stdout == ""  # unchanged: not copied again


def test_to_yaml_is_one_stream_kubectl_reads_back_unchanged() -> None:
    assert list(yaml.safe_load_all(cluster_manifests.to_yaml(MANIFESTS))) == MANIFESTS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"namespace": "Edge"}, "namespace 'Edge' is not a DNS-1123 label"),
        ({"namespace": "kube-system"}, "belongs to Kubernetes, Arc or Azure ML"),
        ({"namespace": "azureml"}, "belongs to Kubernetes, Arc or Azure ML"),
        ({"instance_types": []}, "instance_types is empty"),
        ({"instance_types": [InstanceTypeSpec("Big", "1", "1Gi", "1", "1Gi")]}, "instance type name 'Big'"),
        (
            {"instance_types": [InstanceTypeSpec("a", "1", "1Gi", "1", "1Gi")] * 2},
            "instance type names repeat: a",
        ),
        ({"instance_types": [InstanceTypeSpec("a", "1 cpu", "1Gi", "1", "1Gi")]}, "cpu_request '1 cpu'"),
        ({"instance_types": [InstanceTypeSpec("a", "0", "1Gi", "1", "1Gi")]}, "cpu_request '0'"),
        ({"instance_types": [InstanceTypeSpec("a", "1", "2G", "1", "2Gi")]}, "memory_request '2G'"),
        ({"instance_types": [InstanceTypeSpec("a", "2", "1Gi", "1", "1Gi")]}, "cpu_request 2 exceeds cpu_limit 1"),
        (
            {"instance_types": [InstanceTypeSpec("a", "1", "2048Mi", "1", "1Gi")]},
            "memory_request 2048Mi exceeds memory_limit 1Gi",
        ),
        ({"instance_types": [InstanceTypeSpec("a", "1", "1Gi", "1", "1Gi", gpu=-1)]}, "gpu -1"),
        ({"cache_size_gi": 0}, "cache_size_gi 0"),
        ({"credential_secret_name": "Storage_Key"}, "credential secret name 'Storage_Key'"),
    ],
)
def test_bad_input_is_one_clear_error_naming_it(kwargs: dict, message: str) -> None:
    arguments = {"namespace": "edge-training", "instance_types": INSTANCE_TYPES, **kwargs}
    with pytest.raises(ManifestError, match=message):
        cluster_manifests.cluster_manifests(**arguments)
