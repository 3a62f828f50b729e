"""Kubernetes manifests for the model server on the Hub's K3s cluster.

One Deployment (the image `package` built, by digest; probes on the inference server's real
routes), a Service in front of it, and the image pull secret built from the registry token.
Rendered as plain dicts, applied with `kubectl apply -f -` from stdin (the secret never touches
a command line or a file on the VM), validated offline in the tests with kubernetes-validate
--strict against the cluster's minor version (K3S_MINOR).

When the stack has a Hub CA (hubCaCertificates), a ConfigMap carries it from the stack output and
the pod mounts it read-only at /etc/edge-training/hub-ca.pem, the path jobs and the Docker VM use,
named by EDGE_HUB_CA_FILE; the image's score.py then trusts certifi's roots plus that CA
(REQUESTS_CA_BUNDLE, SSL_CERT_FILE). A ConfigMap, not the node's file: a hostPath volume is outside
Pod Security "restricted", and the CA is public, so it needs no Secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from edge.real_edge import HUB_CA_ON_VM

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
    hub_ca: str = field(default="", repr=False)
    """The stack output hubCaCertificates (PEM); empty: the pod trusts the image's roots only."""

    def __post_init__(self) -> None:
        for label, value in (("app", self.app), ("namespace", self.namespace)):
            if len(value) > 63 or not NAME.fullmatch(value):
                raise ManifestError(f"{label} {value!r} is not a Kubernetes name (lower case, digits, '-', <= 63)")
        if not 30000 <= self.node_port <= 32767:
            raise ManifestError(f"node port {self.node_port} is outside the NodePort range 30000-32767")
        if "@sha256:" not in self.image:
            raise ManifestError(f"image {self.image!r} must be pinned by digest (registry/repo@sha256:...)")
        if self.hub_ca.strip() and "-----BEGIN CERTIFICATE-----" not in self.hub_ca:
            raise ManifestError("hubCaCertificates holds no PEM certificate")
        if "PRIVATE KEY" in self.hub_ca:
            raise ManifestError("hubCaCertificates holds a private key: only the CA certificates belong there")

    @property
    def pull_secret(self) -> str:
        return f"{self.app}-pull"

    @property
    def hub_ca_config_map(self) -> str:
        return f"{self.app}-hub-ca"


HUB_CA_KEY = HUB_CA_ON_VM.rsplit("/", 1)[1]
HUB_CA_DIRECTORY = HUB_CA_ON_VM.rsplit("/", 1)[0]


def hub_ca_config_map(release: ServingRelease) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": release.hub_ca_config_map, "namespace": release.namespace,
                     "labels": {"app": release.app}},
        "data": {HUB_CA_KEY: release.hub_ca.strip() + "\n"},
    }  # fmt: skip


def _trust(release: ServingRelease) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]],
                                             list[dict[str, Any]]]:  # fmt: skip
    """The pod's annotations, the container's env and mounts, the pod's volumes for the Hub CA."""
    if not release.hub_ca.strip():
        return {}, [], [], []
    # A new CA changes the pod template, so the Deployment rolls the pods onto it.
    digest = hashlib.sha256(release.hub_ca.strip().encode()).hexdigest()
    return (
        {"edge-training/hub-ca-sha256": digest},
        [{"name": "EDGE_HUB_CA_FILE", "value": HUB_CA_ON_VM}],
        [{"name": "hub-ca", "mountPath": HUB_CA_DIRECTORY, "readOnly": True}],
        [{"name": "hub-ca", "configMap": {"name": release.hub_ca_config_map, "defaultMode": 0o444,
                                          "items": [{"key": HUB_CA_KEY, "path": HUB_CA_KEY}]}}],
    )  # fmt: skip


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
    annotations, env, mounts, volumes = _trust(release)
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
                "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
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
                            **({"env": env} if env else {}),
                            # gunicorn's worker heartbeat files (and score.py's CA bundle); the
                            # root filesystem is read-only.
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],  # noqa: S108
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *volumes],
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
    trust = [hub_ca_config_map(release)] if release.hub_ca.strip() else []
    return [pull_secret(release), *trust, deployment(release), service(release)]


def as_list(release: ServingRelease) -> str:
    """One JSON `v1/List` document for `kubectl apply -f -` (JSON is valid YAML)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests(release)})
