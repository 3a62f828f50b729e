"""The Kubernetes objects the edge cluster needs before Azure ML can run a job on it.

- The compute namespace: Azure ML's Kubernetes compute runs jobs in a namespace that must already
  exist (how-to-attach-kubernetes-to-workspace.md).
- One `InstanceType` (amlarc.azureml.com/v1alpha1, the CRD the Azure ML extension installs) per
  configured size: `resources.requests`/`limits` for CPU and memory, NVIDIA GPUs in limits only
  (how-to-manage-kubernetes-instance-types.md).
- The storage credential, kept in the cluster: an empty Secret the operator fills, copied by a
  small DaemonSet onto each node's disk (root-only), and a hostPath PV/PVC over that directory
  labelled `ml.azure.com/pvc: "true"` and annotated `ml.azure.com/mountpath: /etc/edge-training`.
  The Azure ML extension mounts every PVC so labelled into the command jobs of its namespace, at
  the annotated path (reference-kubernetes.md, "Azure Machine Learning jobs connect with custom
  data storage"; Azure/AML-Kubernetes docs/pvc.md), so train.py finds the credential at
  /etc/edge-training/storage-credential, where it looks on the VM today. Jobs cannot mount a
  Secret themselves (an InstanceType carries only nodeSelector and resources), hence the copy.
- The staging cache on the node's disk: a second hostPath PV/PVC, mounted into jobs the same way
  at /var/cache/edge-training, so a job on unchanged data downloads nothing.

Nothing here holds a secret: the Secret is created empty and filled in the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

INSTANCE_TYPE_API_VERSION = "amlarc.azureml.com/v1alpha1"
INSTANCE_TYPE_CRD = "instancetypes.amlarc.azureml.com"

CREDENTIAL_MOUNT_PATH = "/etc/edge-training"
"""Where jobs see the credential directory; training/src/edge_train/credentials.py reads
storage-credential in it."""
CREDENTIAL_KEY = "storage-credential"
"""The Secret's key, and so the file name under CREDENTIAL_MOUNT_PATH."""
CREDENTIAL_HOST_PATH = "/var/lib/edge-training/credential"
"""On each node: the copy of the Secret that the credential PV exposes (root-only)."""
STAGING_CACHE_PATH = "/var/cache/edge-training"
"""On each node and, through the PVC, in each job: the staging cache."""

# A utility image from Microsoft's registry, which the Arc agents and the Azure ML extension
# already pull from (mcr.microsoft.com is on Arc's outbound list), so no new endpoint.
COPIER_IMAGE = "mcr.microsoft.com/azurelinux/busybox:1.36"
COPY_INTERVAL_SECONDS = 30

# Kubernetes quantities as jobs will be given them: plain or suffixed CPU ("500m", "2") and
# binary-suffixed memory ("2Gi", "512Mi"). Narrower than Kubernetes on purpose: a typo such as
# "2G" (decimal gigabytes) is refused rather than silently meaning something else.
_CPU = re.compile(r"(?:[1-9][0-9]*m|[0-9]+(?:\.[0-9]+)?)")
_MEMORY = re.compile(r"[1-9][0-9]*(?:Ki|Mi|Gi|Ti)")
# A DNS-1123 label: InstanceType and namespace names are Kubernetes object names.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class ManifestError(ValueError):
    """A value the cluster would refuse or misread; the message names it."""


@dataclass(frozen=True)
class InstanceTypeSpec:
    name: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    gpu: int = 0


def _check_name(what: str, value: str) -> None:
    if not _DNS_LABEL.fullmatch(value):
        raise ManifestError(f"{what} {value!r} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)")


def _millicores(value: str) -> float:
    return float(value[:-1]) if value.endswith("m") else float(value) * 1000


_MEMORY_UNITS = {"Ki": 1, "Mi": 1024, "Gi": 1024**2, "Ti": 1024**3}


def _kibibytes(value: str) -> int:
    return int(value[:-2]) * _MEMORY_UNITS[value[-2:]]


def _check_instance_type(spec: InstanceTypeSpec) -> None:
    _check_name("instance type name", spec.name)
    where = f"instance type {spec.name!r}"
    for field_name in ("cpu_request", "cpu_limit"):
        value = getattr(spec, field_name)
        if not _CPU.fullmatch(value) or _millicores(value) <= 0:
            raise ManifestError(f"{where}: {field_name} {value!r} is not a CPU quantity such as '500m' or '2'")
    for field_name in ("memory_request", "memory_limit"):
        value = getattr(spec, field_name)
        if not _MEMORY.fullmatch(value):
            raise ManifestError(f"{where}: {field_name} {value!r} is not a memory quantity such as '2Gi' or '512Mi'")
    if _millicores(spec.cpu_request) > _millicores(spec.cpu_limit):
        raise ManifestError(f"{where}: cpu_request {spec.cpu_request} exceeds cpu_limit {spec.cpu_limit}")
    if _kibibytes(spec.memory_request) > _kibibytes(spec.memory_limit):
        raise ManifestError(f"{where}: memory_request {spec.memory_request} exceeds memory_limit {spec.memory_limit}")
    if isinstance(spec.gpu, bool) or not isinstance(spec.gpu, int) or spec.gpu < 0:
        raise ManifestError(f"{where}: gpu {spec.gpu!r} is not a whole number of GPUs")


def instance_type(spec: InstanceTypeSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": spec.cpu_limit, "memory": spec.memory_limit}
    if spec.gpu:
        # Extended resources are set in limits only; Kubernetes copies them to requests.
        limits["nvidia.com/gpu"] = spec.gpu
    return {
        "apiVersion": INSTANCE_TYPE_API_VERSION,
        "kind": "InstanceType",
        # Cluster-scoped: the CRD the extension installs is not namespaced.
        "metadata": {"name": spec.name},
        "spec": {"resources": {"requests": {"cpu": spec.cpu_request, "memory": spec.memory_request}, "limits": limits}},
    }


def _host_path_volume(namespace: str, name: str, host_path: str, mount_path: str, size: str) -> list[dict[str, Any]]:
    """A PV over a node directory and the PVC that Azure ML mounts into every job of `namespace`.

    Static binding both ways (claimRef and volumeName) and storageClassName "" so K3s's default
    local-path class never provisions a different volume for the claim.
    """
    pv_name = f"{namespace}-{name}"
    access = ["ReadWriteMany"]  # several job pods at once; hostPath does not enforce modes
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "edge-training"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": access,
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": host_path, "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": namespace, "name": name},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"ml.azure.com/pvc": "true", "app.kubernetes.io/part-of": "edge-training"},
                "annotations": {"ml.azure.com/mountpath": mount_path},
            },
            "spec": {
                "accessModes": access,
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": size}},
            },
        },
    ]


# Copies each key of the Secret to the node directory, atomically and only when it changed, so
# a filled or rotated Secret reaches every node within COPY_INTERVAL_SECONDS. Never prints a value.
_COPY_LOOP = f"""set -eu
while true; do
  for source in /secret/*; do
    [ -f "$source" ] || continue
    name=$(basename "$source")
    if ! cmp -s "$source" "/credential/$name"; then
      cp "$source" "/credential/.$name.new"
      chmod 0600 "/credential/.$name.new"
      mv -f "/credential/.$name.new" "/credential/$name"
      echo "updated $name"
    fi
  done
  sleep {COPY_INTERVAL_SECONDS}
done
"""


def _credential_copier(namespace: str, secret_name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "credential-copier", "app.kubernetes.io/part-of": "edge-training"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "credential-copier", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # Every node that can run a job, including ones Azure ML taints for itself.
                    "tolerations": [{"operator": "Exists"}],
                    "automountServiceAccountToken": False,
                    # Pod Security "restricted" where the copier's function allows: seccomp, no
                    # escalation, no capabilities, read-only root. Not runAsNonRoot and not without
                    # hostPath: it writes root-owned 0600 files into a root-owned node directory,
                    # which no unprivileged user can (tests/test_pod_security.py names the two).
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "copy",
                            "image": COPIER_IMAGE,
                            "command": ["/bin/sh", "-c", _COPY_LOOP],
                            "resources": {
                                "requests": {"cpu": "5m", "memory": "16Mi"},
                                "limits": {"cpu": "50m", "memory": "32Mi"},
                            },
                            # Root only to own the 0600 copies like the VM's file today; no
                            # capabilities, no escalation, nothing writable but the copy target.
                            "securityContext": {
                                "runAsUser": 0,
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "secret", "mountPath": "/secret", "readOnly": True},
                                {"name": "credential", "mountPath": "/credential"},
                            ],
                        }
                    ],
                    "volumes": [
                        # optional: the copier runs (and copies nothing) until the operator fills it.
                        {
                            "name": "secret",
                            "secret": {"secretName": secret_name, "optional": True, "defaultMode": 0o400},
                        },
                        {
                            "name": "credential",
                            "hostPath": {"path": CREDENTIAL_HOST_PATH, "type": "DirectoryOrCreate"},
                        },
                    ],
                },
            },
        },
    }


POD_SECURITY_LABELS = {
    "app.kubernetes.io/part-of": "edge-training",
    # Pod Security admission (kubernetes.io/docs/concepts/security/pod-security-admission): the
    # credential copier's hostPath breaks even "baseline", so enforcing a stricter level would refuse
    # it, on a cluster hardened to enforce "restricted" by default (K3s's CIS guide) as well; every
    # pod that falls short of "restricted" (Azure ML's job pods included) is warned about on apply
    # and annotated in the audit log instead, so a `privileged: true` cannot go unseen.
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


def cluster_manifests(
    namespace: str,
    instance_types: Sequence[InstanceTypeSpec],
    credential_secret_name: str = "edge-training-storage",  # noqa: S107 (a Secret's name)
    cache_size_gi: int = 50,
) -> list[dict[str, Any]]:
    """Everything the compute namespace needs, in the order it can be applied."""
    _check_name("namespace", namespace)
    if namespace.startswith("kube-") or namespace in ("default", "azureml", "azure-arc", "azure-arc-release"):
        raise ManifestError(f"namespace {namespace!r} belongs to Kubernetes, Arc or Azure ML; choose one of your own")
    _check_name("credential secret name", credential_secret_name)
    if isinstance(cache_size_gi, bool) or not isinstance(cache_size_gi, int) or cache_size_gi < 1:
        raise ManifestError(f"cache_size_gi {cache_size_gi!r} is not a positive whole number of GiB")
    if not instance_types:
        raise ManifestError("instance_types is empty: a Kubernetes compute needs at least one instance type")
    for spec in instance_types:
        _check_instance_type(spec)
    names = [spec.name for spec in instance_types]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ManifestError(f"instance type names repeat: {', '.join(duplicates)}")

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": credential_secret_name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "edge-training"},
            "annotations": {
                "edge-training/fill-with": (
                    f"kubectl -n {namespace} create secret generic {credential_secret_name} "
                    f"--from-file={CREDENTIAL_KEY}=<file> --dry-run=client -o yaml | kubectl apply -f -"
                )
            },
        },
        "type": "Opaque",
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": POD_SECURITY_LABELS}},
        secret,
        _credential_copier(namespace, credential_secret_name),
        *_host_path_volume(namespace, "credential", CREDENTIAL_HOST_PATH, CREDENTIAL_MOUNT_PATH, "1Mi"),
        *_host_path_volume(namespace, "staging-cache", STAGING_CACHE_PATH, STAGING_CACHE_PATH, f"{cache_size_gi}Gi"),
        *(instance_type(spec) for spec in instance_types),
    ]


def to_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    """One multi-document YAML stream, as `kubectl apply -f` takes it."""
    return yaml.safe_dump_all(list(manifests), sort_keys=False, explicit_start=True)


# --- GPUs (issue 24) ---

NVIDIA_RUNTIME_CLASS = "nvidia"
"""K3s ships a RuntimeClass of this name for the runtime it finds (docs.k3s.io, "Alternative
Container Runtime Support": "K3s includes Kubernetes RuntimeClass definitions for all supported
alternative runtimes"); the first boot checks that it exists rather than declaring its own,
which K3s's packaged manifest would fight over."""
GPU_CHECK_POD = "edge-training-gpu-check"
# Any glibc image will do: the NVIDIA runtime mounts nvidia-smi and its libraries into the
# container ("utility" capability). From Microsoft's registry, already on Arc's outbound list.
GPU_CHECK_IMAGE = "mcr.microsoft.com/azurelinux/base/core:3.0"


def gpu_check_pod(namespace: str, image: str = GPU_CHECK_IMAGE) -> dict[str, Any]:
    """A pod that lists the GPUs it can see (`nvidia-smi -L`) and exits: what the first boot runs to
    prove a pod sees the GPU before anything is declared ready.

    It asks for the NVIDIA runtime by its RuntimeClass and for every GPU by NVIDIA_VISIBLE_DEVICES,
    not by nvidia.com/gpu: the device plugin comes with the Azure ML extension, after the first
    boot. Restricted by Pod Security's "restricted" profile, like the jobs beside it."""
    _check_name("namespace", namespace)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": GPU_CHECK_POD,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "edge-training"},
        },
        "spec": {
            "restartPolicy": "Never",
            "runtimeClassName": NVIDIA_RUNTIME_CLASS,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "nvidia-smi",
                    "image": image,
                    "command": ["nvidia-smi", "-L"],
                    "env": [
                        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
                    ],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                    # No readOnlyRootFilesystem (the restricted profile does not ask for it): the
                    # NVIDIA runtime's hook mounts the driver's files into the container's root
                    # and updates its ld cache as the container starts.
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
