"""Every host and port the edge reaches, why, and where that is written: the one egress list.

docs/deploy/egress.md's table is generated from it (docs_gen's `egress` region, scripts/docs), and
tests/test_egress.py fails when the first-boot scripts, the Arc chart or the Azure ML extension's
settings name a host this list lacks, or when the page is stale.

`<region>` is `location` (the Azure region of the Arc resource and the workspace), `<hub>` the
Hub's own domain (hubArmEndpoint's, e.g. local.azurestack.external).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARC_NETWORK = "MicrosoftDocs/azure-docs articles/azure-arc/kubernetes/includes/network-requirements-azure-cloud.md"
AML_NETWORK = (
    "MicrosoftDocs/azure-ai-docs articles/machine-learning/how-to-access-azureml-behind-firewall.md"
    " (Kubernetes compute)"
)


@dataclass(frozen=True)
class Egress:
    host: str
    """A host, `*.` a wildcard for its subdomains, `<region>`/`<...>` a placeholder."""
    port: int
    used_by: str
    why: str
    source: str

    def matches(self, host: str, hub_domain: str = "") -> bool:
        """Whether `host` is this entry: `*.` is one or more labels, `<region>` and the like one
        label, `<hub>` the Hub's domain (matches nothing when not given)."""
        return _pattern(self.host, hub_domain).fullmatch(host.lower()) is not None


def _pattern(host: str, hub_domain: str = "") -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(<[^>]+>|\*\.)", host.lower()):
        if piece == "<hub>":
            parts.append(re.escape(hub_domain.lower().strip(".")) if hub_domain else "(?!)")
        elif piece.startswith("<"):
            parts.append(r"[a-z0-9-]+")
        elif piece == "*.":
            parts.append(r"(?:[a-z0-9-]+\.)+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


EGRESS: tuple[Egress, ...] = (
    # --- first boot (edge/first_boot.sh), every VM --------------------------------------------------
    Egress(
        "archive.ubuntu.com",
        80,
        "first boot (apt)",
        "Ubuntu packages (ca-certificates, curl, gnupg)",
        "the image's /etc/apt/sources.list; a Hub image may name a local mirror instead",
    ),
    Egress("security.ubuntu.com", 80, "first boot (apt)", "Ubuntu security updates", "the image's apt sources"),
    Egress(
        "download.docker.com",
        443,
        "first boot (apt, curl)",
        "Docker Engine's apt repository and signing key",
        "edge/first_boot.sh; Docker docs, 'Install Docker Engine on Ubuntu'",
    ),
    # --- first boot, K3s nodes ------------------------------------------------------------------------
    Egress(
        "github.com",
        443,
        "first boot (curl)",
        "the K3s binary and sha256sum-amd64.txt (release assets)",
        "edge/first_boot.sh; k3s-io/k3s releases",
    ),
    Egress(
        "release-assets.githubusercontent.com",
        443,
        "first boot (curl)",
        "where github.com redirects release-asset downloads (HTTP 302)",
        "GitHub's release download redirect",
    ),
    Egress(
        "objects.githubusercontent.com",
        443,
        "first boot (curl)",
        "the older target of the same redirect, still served",
        "GitHub's release download redirect",
    ),
    Egress(
        "raw.githubusercontent.com",
        443,
        "first boot (curl)",
        "K3s's install.sh at the pinned tag",
        "edge/first_boot.py K3S_INSTALLER_SHA256",
    ),
    Egress("get.helm.sh", 443, "first boot (curl)", "Helm's release tarball", "edge/first_boot.py HELM_SHA256"),
    Egress(
        "nvidia.github.io",
        443,
        "first boot (curl, apt), NCv3 sizes only",
        "NVIDIA's container-toolkit signing key and apt repository",
        "edge/first_boot.py NVIDIA_KEY_FINGERPRINT, NVIDIA_TOOLKIT_VERSION (docs/deploy/gpus.md)",
    ),
    Egress(
        "<k3s-server>",
        6443,
        "K3s agents",
        "joining the K3s server: inside the VNet, never through the proxy",
        "components/edge_kubernetes.py k3s_server_url (the server VM's name, resolved by the Hub's iDNS)",
    ),
    # --- images and charts --------------------------------------------------------------------------
    Egress(
        "mcr.microsoft.com",
        443,
        "K3s/containerd, Helm",
        "the Arc chart (OCI), agent, extension, copier and job images",
        ARC_NETWORK,
    ),
    Egress("*.data.mcr.microsoft.com", 443, "K3s/containerd, Helm", "MCR's content delivery for the same", ARC_NETWORK),
    # --- Azure Arc agents -----------------------------------------------------------------------------
    Egress("management.azure.com", 443, "Arc agents", "Azure Resource Manager", ARC_NETWORK),
    Egress(
        "<region>.dp.kubernetesconfiguration.azure.com", 443, "Arc agents", "configuration and extensions", ARC_NETWORK
    ),
    Egress("login.microsoftonline.com", 443, "Arc agents, Azure ML", "Microsoft Entra ID tokens", ARC_NETWORK),
    Egress("<region>.login.microsoft.com", 443, "Arc agents", "Microsoft Entra ID tokens", ARC_NETWORK),
    Egress("login.windows.net", 443, "Arc agents", "Microsoft Entra ID tokens", ARC_NETWORK),
    Egress("sts.windows.net", 443, "Arc agents", "Microsoft Entra ID tokens", ARC_NETWORK),
    Egress("gbl.his.arc.azure.com", 443, "Arc agents", "managed identity certificates (global)", ARC_NETWORK),
    Egress("*.his.arc.azure.com", 443, "Arc agents", "managed identity certificates (regional)", ARC_NETWORK),
    Egress("guestnotificationservice.azure.com", 443, "Arc agents", "cluster connect notifications", ARC_NETWORK),
    Egress("*.guestnotificationservice.azure.com", 443, "Arc agents", "cluster connect notifications", ARC_NETWORK),
    Egress(
        "*.servicebus.windows.net",
        443,
        "Arc agents, Azure ML extension",
        "Azure Relay (websockets): cluster connect, and the extension's relayserver hybrid connection",
        ARC_NETWORK + "; components/edge_kubernetes.py extension_settings",
    ),
    Egress(
        "<region>.obo.arc.azure.com", 8084, "Arc agents", "required when cluster connect is configured", ARC_NETWORK
    ),
    Egress("*.arc.azure.net", 443, "Arc agents", "managing the connected cluster in the Azure portal", ARC_NETWORK),
    Egress("k8sconnectcsp.azureedge.net", 443, "Arc agents", "agent downloads", ARC_NETWORK),
    # --- Azure ML extension and jobs ------------------------------------------------------------------
    Egress("<workspace-id>.workspace.<region>.api.azureml.ms", 443, "Azure ML extension", "the workspace", AML_NETWORK),
    Egress("<region>.api.azureml.ms", 443, "Azure ML extension", "jobs, metrics", AML_NETWORK),
    Egress("<region>.experiments.azureml.net", 443, "Azure ML extension", "run history", AML_NETWORK),
    Egress("*.blob.core.windows.net", 443, "jobs", "job code, logs and outputs (the workspace's storage)", AML_NETWORK),
    Egress("*.table.core.windows.net", 443, "Azure ML extension", "the workspace's storage", AML_NETWORK),
    Egress("*.queue.core.windows.net", 443, "Azure ML extension", "the workspace's storage", AML_NETWORK),
    Egress("*.azurecr.io", 443, "K3s/containerd", "job and model images (the stack's registry)", AML_NETWORK),
    Egress("*.<region>.data.azurecr.io", 443, "K3s/containerd", "the registry's data endpoint", AML_NETWORK),
    Egress("*.kusto.windows.net", 443, "Azure ML extension", "extension telemetry", AML_NETWORK),
    Egress("pypi.org", 443, "jobs", "building job environments (conda/pip)", AML_NETWORK),
    Egress("files.pythonhosted.org", 443, "jobs", "building job environments (conda/pip)", AML_NETWORK),
    # --- the Hub itself: inside, never through the proxy (edgeNoProxy always holds its domain) --------
    Egress(
        "*.<hub>",
        443,
        "jobs, first boot's trust",
        "the Hub's blob endpoint (and its Resource Manager, AD FS)",
        "components/config.py _edge_network; edge_train reads hub:// data in place",
    ),
)

NOT_EGRESS: dict[str, str] = {
    "<region>.cloudapp.azure.com": (
        "the extension's `domain` setting names the inference router's DNS domain; enableInference is False, "
        "so nothing connects to it"
    ),
}
"""Host names that appear in the settings but are not reached, and why."""

def covered(host: str, hub_domain: str = "") -> bool:
    """Whether the list holds `host` (or says why it is not reached)."""
    return any(entry.matches(host, hub_domain) for entry in EGRESS) or any(
        _pattern(name).fullmatch(host.lower()) for name in NOT_EGRESS
    )


def table() -> str:
    rows = ["| host | port | used by | why | source |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| `{e.host}` | {e.port} | {e.used_by} | {e.why} | {e.source} |" for e in EGRESS]
    rows += ["", "Named in the settings but not reached:", ""]
    rows += [f"- `{host}`: {why}" for host, why in NOT_EGRESS.items()]
    return "\n".join(rows) + "\n"
