"""The one egress list (edge/egress.py) against what the code really reaches, and its page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import docs_gen
from components.edge_kubernetes import extension_settings
from edge import cluster_manifests, egress, first_boot
from edge.real_edge import EdgeNetwork
from tests.test_k3s_first_boot import AGENT, SERVER
from training import jobs

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"\b(?:https?|oci)://[^\s\"'<>]+")
HOST = re.compile(r"\b(?:[a-z0-9-]+\.)+(?:com|net|io|ms|org|sh)\b")
PROXY = EdgeNetwork(https_proxy="http://proxy.contoso.example:3128", no_proxy=(".local.azurestack.external",))


def hosts_in_urls(text: str) -> set[str]:
    return {urlsplit(url).hostname or "" for url in URL.findall(text)} - {""}


def scripts() -> dict[str, str]:
    rendered = {}
    for network_name, network in (("plain", None), ("proxied", PROXY)):
        for role, kwargs in (("docker", {}), ("server", {"server": SERVER}), ("agent", {"agent": AGENT})):
            for gpus in (0, 1):
                rendered[f"{role}-{network_name}-gpus{gpus}"] = first_boot.render_script(
                    "azureuser", "27.5.1", network=network, gpus=gpus, **kwargs
                )
    return rendered


def reached_hosts() -> dict[str, set[str]]:
    """Every host the edge's code names, by where it is named."""
    # Not egress: the test's proxy, and the node's own K3s API on loopback (the join token's rotation).
    local = {"proxy.contoso.example", "127.0.0.1"}
    found = {name: hosts_in_urls(script) - local for name, script in scripts().items()}
    # The agents' server URL: the server VM's name in the program, an address in the VNet in the
    # test's agent (tests/test_k3s_first_boot.py); either way the <k3s-server> entry.
    for name in found:
        found[name] = {"k3s-server" if h == urlsplit(AGENT.server_url).hostname else h for h in found[name]}
    found["arc chart"] = hosts_in_urls(first_boot.ARC_CHART)
    images = (cluster_manifests.COPIER_IMAGE, cluster_manifests.GPU_CHECK_IMAGE, jobs.BASE_IMAGE)
    found["images"] = {image.split("/", 1)[0] for image in images}
    settings = extension_settings("/subscriptions/s/x", "edge-dev", "westeurope", 1, "/relay/id", "hc")
    found["extension settings"] = {h for value in settings.values() for h in HOST.findall(value)}
    return found


def test_the_code_names_the_hosts_we_expect_it_to() -> None:
    """The extraction itself works: it finds what we know is there (so a pass below means something)."""
    found = reached_hosts()
    assert {"download.docker.com", "github.com", "raw.githubusercontent.com", "get.helm.sh"} <= found[
        "server-plain-gpus0"
    ]
    assert "nvidia.github.io" in found["server-plain-gpus1"]
    assert found["arc chart"] == {"mcr.microsoft.com"}
    assert found["extension settings"] == {"westeurope.cloudapp.azure.com"}


def test_every_host_the_edge_reaches_is_on_the_egress_list() -> None:
    missing = {
        f"{where}: {host}" for where, hosts in reached_hosts().items() for host in hosts if not egress.covered(host)
    }
    assert not missing, f"add these to edge/egress.py EGRESS (with why and a source): {sorted(missing)}"


def test_a_host_off_the_list_is_caught() -> None:
    assert not egress.covered("get.k3s.io")  # named by the old README, never used
    assert egress.covered("westeurope.obo.arc.azure.com") and egress.covered("x.servicebus.windows.net")


def test_every_entry_says_why_and_where_it_is_written() -> None:
    for entry in egress.EGRESS:
        assert entry.why and entry.source and entry.used_by, entry
        assert 0 < entry.port < 65536, entry
    assert [e.host for e in egress.EGRESS if e.port not in (80, 443)] == ["<k3s-server>", "<region>.obo.arc.azure.com"]


def test_the_page_is_generated_from_the_list() -> None:
    """The page's table is docs_gen's `egress` region (tests/test_docs.py fails when it is stale)."""
    page_path = ROOT / "docs" / "deploy" / "egress.md"
    page = page_path.read_text()
    assert docs_gen.GENERATORS["egress"] is egress.table
    assert [r.name for r in docs_gen.regions(page_path, page)] == ["egress"]
    for entry in egress.EGRESS:
        assert f"| `{entry.host}` | {entry.port} |" in page
    stale = page.replace("get.helm.sh", "get.k3s.io")
    assert docs_gen.render(stale, page_path, {}) == page  # a hand-edited table is put back


@pytest.mark.parametrize(
    ("host", "hub_domain", "expected"),
    [
        ("westeurope.login.microsoft.com", "", True),
        ("evil.example/westeurope.login.microsoft.com", "", False),
        ("a.b.login.microsoft.com", "", False),  # <region> is one label
        ("acct.blob.local.azurestack.external", "local.azurestack.external", True),
        ("acct.blob.local.azurestack.external", "", False),  # <hub> is nothing until known
        ("cr.westeurope.data.azurecr.io", "", True),
        ("mcr.microsoft.com.evil.example", "", False),
    ],
)
def test_wildcards_and_placeholders_match_what_they_say(host: str, hub_domain: str, expected: bool) -> None:
    assert egress.covered(host, hub_domain) is expected
