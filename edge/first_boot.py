"""The edge VM's first-boot script, and the two ways of running it (cloud-init or CustomScript).

Docker-only (the virtual-machine compute mode) or, for the Kubernetes mode, also K3s: a server
that onboards the cluster to Azure Arc and applies the compute namespace's manifests, or an agent
that joins it. Pinned versions below, each with where its checksum comes from.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edge import cluster_manifests, k3s_releases
from edge.real_edge import EdgeNetwork, arc_proxy_values, shell_functions

SCRIPT = Path(__file__).with_name("first_boot.sh")
GPU_SCRIPT = Path(__file__).with_name("first_boot_gpu.sh")
"""The GPU functions, rendered into SCRIPT (at @GPU_FUNCTIONS@) whatever the VM size."""
UPGRADE_FUNCTIONS = Path(__file__).with_name("k3s_upgrade.sh")
"""The in-place upgrade's shell functions, rendered into SCRIPT at @K3S_UPGRADE@."""
SCRIPT_PATH_ON_VM = "/opt/edge-training/first-boot.sh"
MARKER_PATH_ON_VM = "/var/lib/edge-training/first-boot-done"
"""Written last by the script; the attach step waits for it."""
CLUSTER_READY_MARKER = "/var/lib/edge-training/cluster-ready"
"""Written by a K3s server once K3s runs, the namespace and volumes exist and the Arc agents run."""
K3S_CONFIG_PATH_ON_VM = "/etc/rancher/k3s/config.yaml"
ARC_VALUES_PATH_ON_VM = "/run/edge-training/arc-onboarding-values.json"
"""Exists only while Helm installs the Arc agents (tmpfs, 0600)."""
INSTANCE_TYPES_UNIT = "edge-training-instance-types.service"

# K3s v1.36 (Kubernetes 1.36, within Azure ML's supported window and kubernetes-validate's schemas).
# K3S_SHA256 is the `k3s` line of the release asset
# https://github.com/k3s-io/k3s/releases/download/v1.36.2%2Bk3s1/sha256sum-amd64.txt; the script
# also downloads that file and refuses a binary whose hash differs from it or from this constant.
# K3S_INSTALLER_SHA256 is install.sh at the same tag (raw.githubusercontent.com/k3s-io/k3s/<tag>/),
# not get.k3s.io, which changes under you. The installer runs with INSTALL_K3S_SKIP_DOWNLOAD=true,
# k3s's documented way to install a binary you placed yourself (docs.k3s.io, air-gap install).
# The default release; `k3sVersion` picks another from edge/k3s_releases.py, where the checksums are data.
_DEFAULT_K3S = k3s_releases.RELEASES[k3s_releases.DEFAULT_VERSION]
K3S_VERSION = _DEFAULT_K3S.version
K3S_SHA256 = _DEFAULT_K3S.sha256
K3S_INSTALLER_SHA256 = _DEFAULT_K3S.installer_sha256
K3S_KUBERNETES_MINOR = "1.36"
"""What manifests are validated against (kubernetes-validate's schemas for this minor)."""
# Helm 3.18.6 linux-amd64: the SHA-256 of helm-v3.18.6-linux-amd64.tar.gz, as published next to it
# (https://get.helm.sh/helm-v3.18.6-linux-amd64.tar.gz.sha256sum, linked from the GitHub release).
HELM_VERSION = "v3.18.6"
HELM_SHA256 = "3f43c0aa57243852dd542493a0f54f1396c0bc8ec7296bbb2c01e802010819ce"
# The chart `az connectedk8s connect` installs. The CLI asks the Arc data plane for the latest
# (`GetLatestHelmPackagePath`, azext_connectedk8s/_utils.py `get_helm_registry`) and pulls it from
# this OCI path; we pin the version it returned in December 2025 ("Pulling HelmChart:
# mcr.microsoft.com/azurearck8s/batch1/stable/v2/azure-arc-k8sagents, Version: 1.31.3" in the CLI's
# log) and turn the agents' self-upgrade off, so the cluster runs what was tested.
ARC_CHART = "oci://mcr.microsoft.com/azurearck8s/batch1/stable/v2/azure-arc-k8sagents"
ARC_CHART_VERSION = "1.31.3"
# How long the in-place upgrade waits (edge/k3s_upgrade.sh): a drain, a node to come back Ready,
# and an agent for its turn. The turn must fit the server's roll of every node before it inside
# the CustomScript extension's 90 minutes ("the script is allowed 90 minutes to run", Microsoft
# Learn, "Use the Azure Custom Script Extension Version 2 with Linux virtual machines").
UPGRADE_DRAIN_SECONDS = 600
UPGRADE_READY_SECONDS = 600
UPGRADE_TURN_SECONDS = 80 * 60

# NVIDIA GPUs (issue 24; docs/deploy/gpus.md has the sources).
# The driver: Ubuntu's packaged NVIDIA driver, the route Microsoft's "Install NVIDIA GPU drivers on
# N-series VMs running Linux" gives for Ubuntu (ubuntu-drivers; signed by Canonical, verified by
# apt against the archive keys the image already trusts, so no new key and no new host). Pinned to
# a branch, not to a package version: Ubuntu's archive keeps only the newest build of a branch in
# -updates, so an exact version would stop installing months later. R580 is NVIDIA's long-term
# support branch and the last one that supports Volta (the Hub's V100).
NVIDIA_DRIVER_BRANCH = "580-server"
# The container toolkit: NVIDIA's apt repository (nvidia.github.io/libnvidia-container, NVIDIA's
# container-toolkit install guide), its four packages at one pinned version, held. The signing key
# is checked against this fingerprint before apt trusts it (apt's NO_PUBKEY for the repository
# names its long id, DDCAE044F796ECB0).
NVIDIA_TOOLKIT_VERSION = "1.18.1-1"
NVIDIA_KEY_FINGERPRINT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
NVIDIA_RUNTIME = "nvidia"
"""K3s's name for the runtime it adds when it finds nvidia-container-runtime (docs.k3s.io, advanced,
"Alternative Container Runtime Support"), and what its config's default-runtime names."""
GPU_RERUN_UNIT = "edge-training-first-boot.service"
"""Runs the script again after the one reboot the driver may need, until the marker exists."""
GPU_HOSTS = ("nvidia.github.io",)
"""Where the GPU first boot downloads from beyond what a CPU VM already reaches (the driver comes
from the Ubuntu mirror the image uses; the check pod's image from mcr.microsoft.com)."""

_HEREDOC_END = "EDGE_TRAINING_EOF"
_SECRET_BEARING = "# This script holds secrets: root-only (0700), never logged.\n"  # noqa: S105 (a comment line)
_LOCATION = re.compile(r"[a-z0-9]+")
_RESOURCE_GROUP = re.compile(r"[-\w._()]{0,89}[-\w()]")  # 1-90, not ending in "."
# Kubernetes cluster resource names as Azure validates them (1-63; letters, digits, "-", "_";
# alphanumeric at both ends), e.g. the AKS managedClusters resourceName pattern.
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9]([-_A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SERVER_URL = re.compile(r"https://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
_JOIN_TOKEN = re.compile(r"[!-~]{16,256}")  # printable ASCII, no spaces: K3s reads it verbatim
_AZURE_ENVIRONMENTS = ("AZUREPUBLICCLOUD", "AZUREUSGOVERNMENTCLOUD", "AZURECHINACLOUD")


class FirstBootError(ValueError):
    """A first-boot input the VM would fail on; the message names it (never a secret's value)."""


@dataclass(frozen=True)
class ArcOnboarding:
    subscription_id: str
    tenant_id: str
    resource_group: str
    cluster_name: str
    location: str
    private_key_pem: str = field(repr=False)
    """PKCS#1 "BEGIN RSA PRIVATE KEY": the chart's global.onboardingPrivateKey, whose public half
    is the ConnectedCluster's agentPublicKeyCertificate."""
    azure_environment: str = "AZUREPUBLICCLOUD"
    auto_upgrade: bool = True
    """Arc agents upgraded by Azure, as `az connectedk8s connect` leaves them; False pins chart_version."""
    chart_version: str = ARC_CHART_VERSION


@dataclass(frozen=True)
class K3sServer:
    join_token: str = field(repr=False)
    arc: ArcOnboarding
    manifests_yaml: str
    """Applied at first boot, except InstanceTypes, applied once the amlarc CRDs
    (instancetypes.amlarc.azureml.com) exist, and the Secret, created once and never overwritten."""
    agent_nodes: tuple[str, ...] = ()
    """The agents' node names (their VMs' computer names) the stack declares: any other node the
    server finds is drained and deleted (scale down, edge/k3s_upgrade.sh)."""


@dataclass(frozen=True)
class K3sAgent:
    server_url: str
    """https://<server private IP>:6443"""
    join_token: str = field(repr=False)


def _check_guid(what: str, value: str) -> None:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise FirstBootError(f"{what} {value!r} is not a GUID") from None


def _check_arc(arc: ArcOnboarding) -> None:
    _check_guid("arc.subscription_id", arc.subscription_id)
    _check_guid("arc.tenant_id", arc.tenant_id)
    if not _RESOURCE_GROUP.fullmatch(arc.resource_group or ""):
        raise FirstBootError(f"arc.resource_group {arc.resource_group!r} is not a resource group name")
    if not _CLUSTER_NAME.fullmatch(arc.cluster_name or ""):
        raise FirstBootError(f"arc.cluster_name {arc.cluster_name!r} is not a connected cluster name")
    if not _LOCATION.fullmatch(arc.location or ""):
        raise FirstBootError(f"arc.location {arc.location!r} is not a region name such as 'westeurope'")
    if not isinstance(arc.chart_version, str) or not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,4}", arc.chart_version):
        raise FirstBootError(f"arc.chart_version {arc.chart_version!r} is not a chart version X.Y.Z")
    if arc.azure_environment not in _AZURE_ENVIRONMENTS:
        raise FirstBootError(f"arc.azure_environment {arc.azure_environment!r} is not one of {_AZURE_ENVIRONMENTS}")
    pem = arc.private_key_pem or ""
    if not pem.startswith("-----BEGIN RSA PRIVATE KEY-----"):
        # The message says what the value is not, never what it is.
        raise FirstBootError('arc.private_key_pem is not a PKCS#1 PEM ("-----BEGIN RSA PRIVATE KEY-----")')
    try:
        # The key is never used here, only checked and handed to the VM. OpenSSL's validation on
        # load (about 0.25 s of CPU at 4096 bits, every evaluation of the program) is mostly the
        # primality tests of p and q, which guard code that then computes with an untrusted key
        # (cryptography's docs on unsafe_skip_rsa_key_validation: "User supplied keys should never
        # be loaded with this parameter set to True. If you do load an invalid key this way and
        # attempt to use it OpenSSL may hang, crash, or otherwise misbehave"). This key is ours,
        # made by providers/cluster_secrets.py with cryptography's generator and kept as a secret
        # in the state; what damage or a wrong value could do to it, _consistent catches.
        key = serialization.load_pem_private_key(pem.encode(), password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError):
        raise FirstBootError("arc.private_key_pem does not parse as an unencrypted RSA private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FirstBootError("arc.private_key_pem is not an RSA key")
    if not _consistent(key.private_numbers()):
        raise FirstBootError("arc.private_key_pem is not a valid RSA key: its numbers do not fit together")


def _consistent(numbers: rsa.RSAPrivateNumbers) -> bool:
    """What OpenSSL's RSA key check tests except whether p and q are prime: n = pq, d inverts e, and
    the CRT values (which the agents' signing uses) derive from p, q and d. Microseconds."""
    p, q, d, e, n = numbers.p, numbers.q, numbers.d, numbers.public_numbers.e, numbers.public_numbers.n
    if p < 3 or q < 3 or p * q != n:
        return False
    return (
        (e * d) % math.lcm(p - 1, q - 1) == 1
        and numbers.dmp1 == d % (p - 1)
        and numbers.dmq1 == d % (q - 1)
        and (numbers.iqmp * q) % p == 1
    )


def _check_token(what: str, token: str) -> None:
    if not isinstance(token, str) or not _JOIN_TOKEN.fullmatch(token):
        raise FirstBootError(f"{what} must be 16 to 256 printable ASCII characters without spaces")


def arc_helm_values(arc: ArcOnboarding, network: EdgeNetwork | None = None) -> dict[str, Any]:
    """The values `az connectedk8s connect` gives the azure-arc-k8sagents chart.

    From azure-cli-extensions src/connectedk8s/azext_connectedk8s/_utils.py `helm_install_release`
    (global.subscriptionId, resourceGroupName, resourceName, location, tenantId in the versions
    that set them on the command line; kubernetesDistro, kubernetesInfra, onboardingPrivateKey,
    azureEnvironment; systemDefaultValues.spnOnboarding=false and clusterconnect-agent.enabled=true;
    `--disable-auto-upgrade` sets systemDefaultValues.azureArcAgents.autoUpdate=false), and Microsoft's
    edge-ai arc-agents module (helm_release "arc_agent"), which installs the chart without the CLI.
    Behind a proxy, also the values its --proxy-* options set (edge/real_edge.py).
    """
    values: dict[str, Any] = {
        "global": {
            "subscriptionId": arc.subscription_id,
            "tenantId": arc.tenant_id,
            "resourceGroupName": arc.resource_group,
            "resourceName": arc.cluster_name,
            "location": arc.location,
            "kubernetesDistro": "k3s",
            "kubernetesInfra": "azure_stack_hub",
            "azureEnvironment": arc.azure_environment,
            "onboardingPrivateKey": arc.private_key_pem,
        },
        "systemDefaultValues": {
            "spnOnboarding": False,
            "clusterconnect-agent": {"enabled": True},
            "azureArcAgents": {"autoUpdate": arc.auto_upgrade},
        },
    }
    values["global"].update(arc_proxy_values(network or EdgeNetwork()))
    return values


def k3s_config(join_token: str, server_url: str | None = None, gpus: int = 0) -> str:
    """/etc/rancher/k3s/config.yaml (keys are the K3s flags without dashes, docs.k3s.io/installation/configuration)."""
    config: dict[str, Any] = {"token": join_token}
    if server_url is None:
        config["write-kubeconfig-mode"] = "0600"
        # Not needed to train: the ingress and the service load balancer cost memory a job can use.
        config["disable"] = ["traefik", "servicelb"]
    else:
        config["server"] = server_url
    if gpus:
        # Azure ML's job pods and the extension's device plugin name no RuntimeClass: only the
        # node's default runtime reaches them (K3s docs: "select one of these to replace runc as
        # the default runtime on a node by setting the --default-runtime value").
        config["default-runtime"] = NVIDIA_RUNTIME
    return yaml.safe_dump(config, sort_keys=False)


def _split_manifests(manifests_yaml: str) -> dict[str, str]:
    """cluster.yaml (applied), create-once.yaml (Secrets), instance-types.yaml (after the CRD)."""
    try:
        documents = [d for d in yaml.safe_load_all(manifests_yaml) if d is not None]
    except yaml.YAMLError as error:
        raise FirstBootError(f"server.manifests_yaml is not YAML: {error}") from None
    groups: dict[str, list[dict[str, Any]]] = {"cluster.yaml": [], "create-once.yaml": [], "instance-types.yaml": []}
    for index, document in enumerate(documents):
        if not isinstance(document, dict) or not document.get("apiVersion") or not document.get("kind"):
            raise FirstBootError(f"server.manifests_yaml document {index} is not a Kubernetes object")
        if document["apiVersion"].startswith("amlarc.azureml.com/"):
            groups["instance-types.yaml"].append(document)
        elif document["kind"] == "Secret":
            if document.get("data") or document.get("stringData"):
                raise FirstBootError(
                    f"server.manifests_yaml Secret {document.get('metadata', {}).get('name')!r} carries data: "
                    "credentials are filled in the cluster, never shipped in custom data"
                )
            groups["create-once.yaml"].append(document)
        else:
            groups["cluster.yaml"].append(document)
    if not groups["cluster.yaml"]:
        raise FirstBootError("server.manifests_yaml has nothing to apply (no namespace or volumes)")
    return {name: cluster_manifests.to_yaml(docs) if docs else "" for name, docs in groups.items()}


_INSTANCE_TYPES_SCRIPT = f"""#!/usr/bin/env bash
# Applies the Azure ML InstanceTypes once the Azure ML extension has installed their CRD, which
# happens after Arc reports the cluster Connected. Until then it fails, and systemd runs it again
# a minute later ({INSTANCE_TYPES_UNIT}: Restart=on-failure, no start limit).
set -euo pipefail
ROOT="${{EDGE_BOOTSTRAP_ROOT:-}}"
export PATH="$PATH:/usr/local/bin"
export KUBECONFIG="$ROOT/etc/rancher/k3s/k3s.yaml"
crd={cluster_manifests.INSTANCE_TYPE_CRD}
if ! kubectl get crd "$crd" -o name > /dev/null 2>&1; then
  echo "edge-instance-types: waiting for the Azure ML extension to install $crd" >&2
  exit 1
fi
kubectl wait --for=condition=Established "crd/$crd" --timeout=60s
kubectl apply -f "$ROOT/etc/edge-training/manifests/instance-types.yaml"
echo "edge-instance-types: applied"
"""

_INSTANCE_TYPES_UNIT = """[Unit]
Description=Apply the edge-training InstanceTypes once the Azure ML extension's CRD exists
Wants=k3s.service
After=k3s.service
StartLimitIntervalSec=0

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash /opt/edge-training/apply-instance-types.sh
Restart=on-failure
RestartSec=60

[Install]
WantedBy=multi-user.target
"""


def _writer(function: str, path_expression: str, content: str) -> str:
    """A shell function that writes `content` to a 0600 file through a quoted heredoc."""
    if any(line == _HEREDOC_END for line in content.splitlines()):
        raise FirstBootError(f"{function}: content contains the line {_HEREDOC_END}")
    if not content.endswith("\n"):
        content += "\n"
    return f"{function}() {{\n  write_private {path_expression} <<'{_HEREDOC_END}'\n{content}{_HEREDOC_END}\n}}\n"


def _manifest_writers(manifests: dict[str, str]) -> str:
    body = "".join(
        f"  write_private \"$1/{name}\" <<'{_HEREDOC_END}' || true\n{content or chr(10)}{_HEREDOC_END}\n"
        for name, content in manifests.items()
    )
    if any(line == _HEREDOC_END for content in manifests.values() for line in content.splitlines()):
        raise FirstBootError(f"server.manifests_yaml contains the line {_HEREDOC_END}")
    return f"write_manifests() {{\n{body}}}\n"


def _gpu_check_namespace(manifests: dict[str, str]) -> str:
    for document in yaml.safe_load_all(manifests["cluster.yaml"]):
        if document and document.get("kind") == "Namespace":
            return str(document["metadata"]["name"])
    raise FirstBootError("server.manifests_yaml declares no Namespace for the GPU check pod to run in")


def render_script(
    admin_username: str,
    docker_version: str,
    server: K3sServer | None = None,
    agent: K3sAgent | None = None,
    gpus: int = 0,
    network: EdgeNetwork | None = None,
    k3s: k3s_releases.K3sRelease | None = None,
) -> str:
    """The script with its values filled in (admin_username and docker_version are validated by
    components.config). None/None: the Docker-only script of the virtual-machine mode. `gpus`:
    the VM's NVIDIA GPUs (components.config.HUB_NVIDIA_GPUS), 0 for none. `network`: the
    operator's CAs and proxy (edge/real_edge.py), applied before anything is downloaded. `k3s`:
    the release to install or upgrade to (default: K3S_VERSION)."""
    network = network or EdgeNetwork()
    k3s = k3s or _DEFAULT_K3S
    if k3s_releases.RELEASES.get(k3s.version) != k3s:
        raise FirstBootError(f"K3s {k3s.version} is not a release recorded in edge/k3s_releases.py")
    if server is not None and agent is not None:
        raise FirstBootError("a VM is either the K3s server or a K3s agent, not both")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 16:
        raise FirstBootError(f"gpus {gpus!r} is not a number of GPUs from 0 to 16")
    secrets = ""
    role = "none"
    gpu_check_namespace = ""
    if server is not None:
        role = "server"
        _check_token("server.join_token", server.join_token)
        _check_arc(server.arc)
        manifests = _split_manifests(server.manifests_yaml)
        bad = [n for n in server.agent_nodes if not _NODE_NAME.fullmatch(n)]
        if bad:
            raise FirstBootError(f"server.agent_nodes {bad!r}: not Kubernetes node names (DNS labels)")
        gpu_writer = []
        if gpus:
            gpu_check_namespace = _gpu_check_namespace(manifests)
            pod = cluster_manifests.to_yaml([cluster_manifests.gpu_check_pod(gpu_check_namespace)])
            gpu_writer = [_writer("write_gpu_check_pod", '"$1"', pod)]
        secrets = "\n".join(
            [
                _writer("write_k3s_config", '"$1"', k3s_config(server.join_token, gpus=gpus)),
                # One line of JSON (which is YAML): the PEM's newlines are escaped inside it.
                _writer("write_arc_values", '"$1"', json.dumps(arc_helm_values(server.arc, network))),
                _manifest_writers(manifests),
                _writer("write_instance_types_script", '"$1"', _INSTANCE_TYPES_SCRIPT),
                _writer("write_instance_types_unit", '"$1"', _INSTANCE_TYPES_UNIT),
                *gpu_writer,
            ]
        )
    elif agent is not None:
        role = "agent"
        _check_token("agent.join_token", agent.join_token)
        if not isinstance(agent.server_url, str) or not _SERVER_URL.fullmatch(agent.server_url):
            raise FirstBootError(f"agent.server_url {agent.server_url!r} is not https://<host>:<port>")
        secrets = _writer("write_k3s_config", '"$1"', k3s_config(agent.join_token, agent.server_url, gpus))
    values = {
        "@ADMIN_USER@": admin_username,
        "@DOCKER_VERSION@": docker_version,
        "@K3S_ROLE@": role,
        "@K3S_VERSION@": k3s.version,
        "@K3S_SHA256@": k3s.sha256,
        "@K3S_INSTALLER_SHA256@": k3s.installer_sha256,
        "@HELM_VERSION@": HELM_VERSION,
        "@HELM_SHA256@": HELM_SHA256,
        "@ARC_CHART@": ARC_CHART,
        "@ARC_CHART_VERSION@": server.arc.chart_version if server is not None else ARC_CHART_VERSION,
        "@ARC_AUTO_UPGRADE@": "true" if server is None or server.arc.auto_upgrade else "false",
        # A digest of the key, never the key: enough to notice a rotated one.
        "@ARC_KEY_FINGERPRINT@": (
            hashlib.sha256(server.arc.private_key_pem.encode()).hexdigest() if server is not None else ""
        ),
        "@K3S_AGENT_NODES@": " ".join(server.agent_nodes) if server is not None else "",
        "@UPGRADE_DRAIN_SECONDS@": str(UPGRADE_DRAIN_SECONDS),
        "@UPGRADE_READY_SECONDS@": str(UPGRADE_READY_SECONDS),
        "@UPGRADE_TURN_SECONDS@": str(UPGRADE_TURN_SECONDS),
        "@GPU_COUNT@": str(gpus),
        "@NVIDIA_DRIVER_BRANCH@": NVIDIA_DRIVER_BRANCH,
        "@NVIDIA_TOOLKIT_VERSION@": NVIDIA_TOOLKIT_VERSION,
        "@NVIDIA_KEY_FINGERPRINT@": NVIDIA_KEY_FINGERPRINT,
        "@GPU_CHECK_NAMESPACE@": gpu_check_namespace,
        "@GPU_CHECK_POD@": cluster_manifests.GPU_CHECK_POD,
    }
    script = (
        SCRIPT.read_text()
        .replace("@GPU_FUNCTIONS@\n", GPU_SCRIPT.read_text())
        .replace("@K3S_UPGRADE@\n", UPGRADE_FUNCTIONS.read_text(), 1)
    )
    for placeholder, value in values.items():
        script = script.replace(placeholder, value)
    # Last, so no placeholder replacement ever runs over a secret.
    script = script.replace("@SECRETS@\n", secrets + shell_functions(network))
    if secrets or network.proxied:  # a proxy URL may carry credentials
        shebang, rest = script.split("\n", 1)
        script = f"{shebang}\n{_SECRET_BEARING}{rest}"
    return script


def holds_secrets(script: str) -> bool:
    return _SECRET_BEARING in script


CUSTOM_DATA_MAX_BYTES = 65535
"""osProfile.customData: "The maximum length of the binary array is 65535 bytes" (Compute API,
OSProfile.customData; the same in the Hub's 2020-06-01)."""


def cloud_init(script: str) -> str:
    """#cloud-config that writes the script and runs it once, at first boot.

    A script that holds secrets is written root-only (0700); cloud-init keeps its own copy of the
    user data root-only as well (/var/lib/cloud/instance/user-data.txt, 0600).
    """
    document = {
        "write_files": [
            {
                "path": SCRIPT_PATH_ON_VM,
                "permissions": "0700" if holds_secrets(script) else "0755",
                "owner": "root:root",
                "encoding": "b64",
                "content": base64.b64encode(script.encode()).decode(),
            }
        ],
        "runcmd": [["bash", SCRIPT_PATH_ON_VM]],
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_SAFE_DUMPER, sort_keys=False)


# libyaml's emitter writes this document byte for byte as PyYAML's own (a test holds it to that:
# changed custom data replaces the VM), in a thirtieth of the time; PyYAML's without libyaml.
_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def custom_data(script: str) -> str:
    """The VM's osProfile.customData: base64 of the cloud-config."""
    document = cloud_init(script).encode()
    if len(document) > CUSTOM_DATA_MAX_BYTES:
        raise FirstBootError(
            f"the first-boot cloud-config is {len(document)} bytes; customData takes at most {CUSTOM_DATA_MAX_BYTES}"
        )
    return base64.b64encode(document).decode()


def custom_script_settings(script: str) -> dict[str, str]:
    """protectedSettings of the CustomScript extension (Microsoft.Azure.Extensions 2.x) running it.

    `script` takes the base64 script itself, so nothing is downloaded from storage.
    """
    return {"script": base64.b64encode(script.encode()).decode()}
