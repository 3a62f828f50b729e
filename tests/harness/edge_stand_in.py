"""A stand-in for helper arcvm's `edge.first_boot` / `edge.cluster_manifests` (issue 13), used only
while that branch is not merged: the interface agreed for it, with just enough behaviour for the
program tests to see what the program hands over (and never what it must keep secret).

`install()` puts it in place only when the real modules are missing or lack the interface, so
once arcvm's modules are merged the tests run against them."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from components import first_boot as docker_boot

MARKER_PATH_ON_VM = docker_boot.MARKER_PATH_ON_VM
CLUSTER_READY_MARKER = "/var/lib/edge-training/cluster-ready"


@dataclass(frozen=True)
class ArcOnboarding:
    subscription_id: str
    tenant_id: str
    resource_group: str
    cluster_name: str
    location: str
    private_key_pem: str = field(repr=False)
    azure_environment: str = "AZUREPUBLICCLOUD"


@dataclass(frozen=True)
class K3sServer:
    join_token: str = field(repr=False)
    arc: ArcOnboarding
    manifests_yaml: str


@dataclass(frozen=True)
class K3sAgent:
    server_url: str
    join_token: str = field(repr=False)


def render_script(
    admin_username: str, docker_version: str, server: K3sServer | None = None, agent: K3sAgent | None = None
) -> str:
    """The Docker script, plus a JSON-ish trailer naming what the real script would be given."""
    script = docker_boot.render_script(admin_username, docker_version)
    if server is not None:
        script += "\n# k3s-server " + yaml.safe_dump(
            {"arc": server.arc.__dict__, "token": server.join_token, "manifests": server.manifests_yaml}
        )
    if agent is not None:
        script += "\n# k3s-agent " + yaml.safe_dump({"url": agent.server_url, "token": agent.join_token})
    return script


def custom_data(script: str) -> str:
    return docker_boot.custom_data(script)


@dataclass(frozen=True)
class InstanceTypeSpec:
    name: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    gpu: int = 0


def cluster_manifests(
    namespace: str,
    instance_types: Sequence[InstanceTypeSpec],
    credential_secret_name: str = "edge-training-storage",  # noqa: S107
    cache_size_gi: int = 50,
) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        *(
            {
                "apiVersion": "amlarc.azureml.com/v1alpha1",
                "kind": "InstanceType",
                "metadata": {"name": t.name},
                "spec": {
                    "resources": {
                        "requests": {"cpu": t.cpu_request, "memory": t.memory_request},
                        "limits": {"cpu": t.cpu_limit, "memory": t.memory_limit},
                    }
                },
            }
            for t in instance_types
        ),
    ]


def to_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(manifests), sort_keys=False, explicit_start=True)


def install() -> bool:
    """Use the real `edge` modules when they have the interface; else this stand-in. True when
    the stand-in is in use."""
    try:
        real = importlib.import_module("edge.first_boot")
        importlib.import_module("edge.cluster_manifests")
        if hasattr(real, "K3sServer") and hasattr(real, "ArcOnboarding"):
            return False
    except ImportError:
        pass
    this = sys.modules[__name__]
    package = types.ModuleType("edge")
    package.__path__ = []  # a package, so `from edge import first_boot` works
    package.first_boot = this  # type: ignore[attr-defined]
    package.cluster_manifests = this  # type: ignore[attr-defined]
    sys.modules.update({"edge": package, "edge.first_boot": this, "edge.cluster_manifests": this})
    return True
