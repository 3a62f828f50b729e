"""Kubernetes manifests for the model server on the Hub's K3s cluster.

One Deployment (the image `package` built, by digest; probes on the inference server's real
routes), a Service in front of it, and the image pull secret built from the registry token.
Rendered as plain dicts, applied with `kubectl apply -f -` from stdin (the secret never touches
a command line or a file on the VM), validated offline in the tests with kubernetes-validate
--strict against the cluster's minor version (K3S_MINOR).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

K3S_MINOR = "1.31"
SERVER_PORT = 5001
LIVENESS_PATH = "/"  # azureml-inference-server-http: 200 "Healthy" once a worker has run init()
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class ServingRelease:
    app: str
    image: str
    registry: str
    token_name: str
    token_password: str = field(repr=False)
    namespace: str = "default"
    node_port: int = 30080
    model: str = ""
    """`name:version`, recorded as an annotation."""

    def __post_init__(self) -> None:
        for label, value in (("app", self.app), ("namespace", self.namespace)):
            if len(value) > 63 or not NAME.fullmatch(value):
                raise ManifestError(f"{label} {value!r} is not a Kubernetes name (lower case, digits, '-', <= 63)")
        if not 30000 <= self.node_port <= 32767:
            raise ManifestError(f"node port {self.node_port} is outside the NodePort range 30000-32767")
        if "@sha256:" not in self.image:
            raise ManifestError(f"image {self.image!r} must be pinned by digest (registry/repo@sha256:...)")

    @property
    def pull_secret(self) -> str:
        return f"{self.app}-pull"


def pull_secret(release: ServingRelease) -> dict[str, Any]:
    """kubernetes.io/dockerconfigjson, as `kubectl create secret docker-registry` writes it."""
    auth = base64.b64encode(f"{release.token_name}:{release.token_password}".encode()).decode()
    config = {"auths": {release.registry: {"username": release.token_name, "password": release.token_password,
                                           "auth": auth}}}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": release.pull_secret, "namespace": release.namespace, "labels": {"app": release.app}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def _probe(failure_threshold: int, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": LIVENESS_PATH, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def deployment(release: ServingRelease) -> dict[str, Any]:
    labels = {"app": release.app}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": release.app,
            "namespace": release.namespace,
            "labels": labels,
            "annotations": {"edge-training/model": release.model, "kubernetes.io/change-cause": release.image},
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": labels},
            # One replica on one node: start the new pod before the old one goes, so a new image
            # that never gets ready leaves the old one serving.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": 300,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "imagePullSecrets": [{"name": release.pull_secret}],
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "model",
                            "image": release.image,
                            "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
                            # Startup allows init() up to 5 minutes; then liveness restarts a hung
                            # server and readiness keeps traffic off one that is not answering.
                            "startupProbe": _probe(failure_threshold=60, period=5),
                            "readinessProbe": _probe(failure_threshold=3, period=10),
                            "livenessProbe": _probe(failure_threshold=3, period=20),
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"memory": "2Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            # gunicorn's worker heartbeat files; the root filesystem is read-only.
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def service(release: ServingRelease) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": release.app, "namespace": release.namespace, "labels": {"app": release.app}},
        "spec": {
            "type": "NodePort",
            "selector": {"app": release.app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": release.node_port}],
        },
    }


def manifests(release: ServingRelease) -> list[dict[str, Any]]:
    return [pull_secret(release), deployment(release), service(release)]


def as_list(release: ServingRelease) -> str:
    """One JSON `v1/List` document for `kubectl apply -f -` (JSON is valid YAML)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests(release)})
