"""Configuration of the edge compute mode: the mode's defaults, sizing against what Microsoft
documents for the Azure ML extension, and what each mode requires."""

from __future__ import annotations

from typing import Any

import pytest

from components import config as stack_config
from tests.test_config import parse, problems_for


def test_kubernetes_is_the_default_mode_with_a_vm_that_leaves_room_for_a_job() -> None:
    cfg = parse({"edgeComputeMode": None, "hubVmSize": None})
    assert cfg.edge.mode == "kubernetes"
    assert cfg.edge.vm_size == cfg.hub.vm_size == "Standard_DS3_v2"
    assert cfg.edge.agent_count == 0
    assert cfg.edge.namespace == "edge-training"
    assert (cfg.edge.instance_type.cpu, cfg.edge.instance_type.memory) == ("2", "8Gi")


def test_virtual_machine_mode_keeps_todays_default_size() -> None:
    cfg = parse({"edgeComputeMode": "virtual-machine", "hubVmSize": None})
    assert cfg.edge.vm_size == cfg.hub.vm_size == "Standard_DS2_v2"


def test_kubernetes_mode_needs_neither_ssh_sources_nor_the_attach_key() -> None:
    cfg = parse({"hubSshSourceCidrs": [], "sshPrivateKey": None}, secret_keys=())
    assert cfg.hub.ssh_source_cidrs == ()
    assert cfg.attach.ssh_private_key == ""


def test_virtual_machine_mode_still_requires_the_attach_key() -> None:
    problems = problems_for({"edgeComputeMode": "virtual-machine", "sshPrivateKey": None}, secret_keys=())
    assert set(problems) == {"sshPrivateKey"}


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown mode", {"edgeComputeMode": "swarm"}, "edgeComputeMode", "kubernetes, virtual-machine"),
    # Microsoft's minimum for the extension with training only is 2 vCPU / 7 GiB (DS2v2).
    ("below the extension's minimum memory", {"hubVmSize": "Standard_F2s_v2"}, "hubVmSize", "at least 2 vCPU / 7 GiB"),
    ("below the extension's minimum vCPUs", {"hubVmSize": "Standard_DS1_v2"}, "hubVmSize", "at least 2 vCPU / 7 GiB"),
    (
        "job does not fit in memory",
        {"hubVmSize": "Standard_DS2_v2", "instanceTypeCpu": "1"},
        "instanceTypeMemory",
        "fit",
    ),
    ("job does not fit in CPU", {"instanceTypeCpu": "3500m"}, "instanceTypeCpu", "does not fit"),
    ("cpu not a quantity", {"instanceTypeCpu": "two"}, "instanceTypeCpu", "CPU quantity"),
    ("memory without unit", {"instanceTypeMemory": "8"}, "instanceTypeMemory", "memory quantity"),
    ("namespace uppercase", {"kubernetesNamespace": "Edge"}, "kubernetesNamespace", "namespace name"),
    ("namespace of the extension", {"kubernetesNamespace": "azureml"}, "kubernetesNamespace", "belongs to"),
    ("too many agents", {"hubAgentCount": 11}, "hubAgentCount", "between 0 and 10"),
    (
        "agents in vm mode",
        {"edgeComputeMode": "virtual-machine", "hubVmSize": None, "hubAgentCount": 1},
        "hubAgentCount",
        "edgeComputeMode kubernetes",
    ),
]


@pytest.mark.parametrize(("overrides", "key", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_edge_settings_are_refused_naming_their_key(overrides: dict[str, Any], key: str, says: str) -> None:
    problems = problems_for(overrides)
    assert set(problems) == {key}, problems
    assert says in problems[key]


def test_the_smallest_documented_size_passes_with_a_job_that_fits() -> None:
    cfg = parse({"hubVmSize": "Standard_DS2_v2", "instanceTypeCpu": "1", "instanceTypeMemory": "3Gi"})
    assert cfg.edge.vm_size == "Standard_DS2_v2"


def test_every_hub_size_family_has_a_known_capacity() -> None:
    # A size the family check accepts but the Kubernetes mode cannot size would fail late.
    for size in stack_config.HUB_VM_SIZES:
        assert any(p.fullmatch(size) for p in stack_config.HUB_VM_SIZE_FAMILIES.values()), size
    assert stack_config.HUB_VM_SIZES["Standard_DS3_v2"] == (4, 14.0)
