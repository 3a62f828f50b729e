"""A stack on the Hub's GPU sizes, under mocks: what the program declares for NCv3 (NVIDIA V100)
in both compute modes, checked against Microsoft's models, and what it refuses (NVv4)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from azure.ai.ml.entities import KubernetesCompute
from azure.mgmt.kubernetesconfiguration.v2023_05_01 import models as extension_models

from components import config as stack_config
from edge import cluster_manifests
from tests.conftest import DEV_SECRET_KEYS, dev_stack_config, recorded_stack
from tests.harness import pulumi_mocks
from tests.harness.arm_models import check_body
from tests.test_edge_kubernetes import (
    EXTENSION,
    HUB_ARM,
    compute_body,
    extension_body,
    extension_script,
    script_extension,
    server_custom_data,
)

SCHEMA = json.loads((Path(cluster_manifests.__file__).parent / "schemas" / "instancetype.schema.json").read_text())
GPU_SIZE = "Standard_NC12s_v3"  # two V100s


@pytest.fixture(scope="module")
def gpu_stack() -> pulumi_mocks.Recording:
    return recorded_stack({"hubVmSize": GPU_SIZE})


def parse(overrides: dict) -> stack_config.StackConfig:
    return stack_config.parse(dev_stack_config() | overrides, stack="dev", secret_keys=DEV_SECRET_KEYS)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "gpus"), [("Standard_NC6s_v3", 1), ("Standard_NC12s_v3", 2), ("Standard_NC24s_v3", 4)]
)
def test_ncv3_sizes_have_their_v100s_and_a_gpu_instance_type(size: str, gpus: int) -> None:
    edge = parse({"hubVmSize": size}).edge
    assert edge.gpus == gpus
    default, gpu = edge.instance_types
    assert default == edge.instance_type and default.gpus == 0
    assert (gpu.name, gpu.cpu, gpu.memory, gpu.gpus) == ("edge-training-gpu", default.cpu, default.memory, gpus)


def test_a_cpu_size_has_no_gpu_and_one_instance_type() -> None:
    edge = parse({"hubVmSize": "Standard_DS3_v2"}).edge
    assert edge.gpus == 0
    assert edge.instance_types == (edge.instance_type,)


def test_the_virtual_machine_mode_on_ncv3_knows_its_gpus() -> None:
    assert parse({"hubVmSize": "Standard_NC6s_v3", "edgeComputeMode": "virtual-machine"}).edge.gpus == 1


# --- kubernetes mode on NCv3 ----------------------------------------------------------------------


def test_the_extension_installs_the_nvidia_device_plugin_and_is_valid_at_2023_05_01(gpu_stack) -> None:
    body = extension_body(gpu_stack.one(EXTENSION))
    assert check_body(extension_models.Extension, body) == []
    assert body["properties"]["configurationSettings"]["installNvidiaDevicePlugin"] == "True"
    cpu = recorded_stack().one(EXTENSION).inputs["configurationSettings"]
    assert cpu["installNvidiaDevicePlugin"] == "False"


def test_the_compute_offers_a_gpu_instance_type_that_azure_ai_ml_would_send_the_same(gpu_stack) -> None:
    body = compute_body(gpu_stack)
    inner = body["properties"]["properties"]
    assert inner["defaultInstanceType"] == "edge-training"  # a GPU job asks for the GPU type
    cpu_only = {"cpu": "2", "memory": "8Gi"}
    expected = {
        "edge-training": {"resources": {"requests": cpu_only, "limits": cpu_only}},
        "edge-training-gpu": {"resources": {"requests": cpu_only, "limits": {**cpu_only, "nvidia.com/gpu": "2"}}},
    }
    assert inner["instanceTypes"] == expected
    sdk = KubernetesCompute(
        name="edge-vm",
        resource_id=body["properties"]["resourceId"],
        namespace="edge-training",
        properties={"defaultInstanceType": "edge-training", "instanceTypes": expected},
    )
    assert inner == sdk._to_rest_object().as_dict()["properties"]["properties"]


def test_the_cluster_gets_the_same_gpu_instance_type_valid_for_the_extensions_crd(gpu_stack) -> None:
    script = server_custom_data(gpu_stack)
    assert 'GPU_COUNT="2"' in script.splitlines()
    assert "default-runtime: nvidia" in script.splitlines()
    # What the first boot writes to instance-types.yaml, from the script's heredoc.
    heredoc = script.split("\"$1/instance-types.yaml\" <<'EDGE_TRAINING_EOF' || true\n")[1].split("EDGE_TRAINING_EOF")[
        0
    ]
    documents = [d for d in yaml.safe_load_all(heredoc) if d]
    assert [d["metadata"]["name"] for d in documents] == ["edge-training", "edge-training-gpu"]
    for document in documents:
        jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert documents[1]["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "nvidia.com/gpu" not in documents[0]["spec"]["resources"]["limits"]


def test_agents_on_a_gpu_size_install_the_gpu_stack_too() -> None:
    recording = recorded_stack({"hubVmSize": GPU_SIZE, "hubAgentCount": 1})
    # Day two: a K3s VM's script travels in its CustomScript extension (docs/operate/day-two.md).
    script = extension_script(script_extension(recording, "vm-agent1-edge-dev"))
    assert 'GPU_COUNT="2"' in script.splitlines() and "default-runtime: nvidia" in script.splitlines()


def test_the_stack_exports_its_gpus_and_instance_types_for_the_cli(gpu_stack) -> None:
    assert gpu_stack.exports["gpusPerNode"].value == 2
    assert gpu_stack.exports["instanceTypes"].value == ["edge-training", "edge-training-gpu"]
    cpu = recorded_stack()
    assert cpu.exports["gpusPerNode"].value == 0
    assert cpu.exports["instanceTypes"].value == ["edge-training"]


# --- virtual-machine mode on NCv3 -----------------------------------------------------------------


def test_the_virtual_machine_mode_installs_the_gpu_stack_on_the_vm() -> None:
    recording = recorded_stack({"hubVmSize": "Standard_NC6s_v3", "edgeComputeMode": "virtual-machine"})
    (vm,) = [r for r in recording.of_type(HUB_ARM) if r.inputs["resourceType"] == "virtualMachines"]
    properties = vm.inputs.get("secretProperties") or vm.inputs["properties"]
    cloud_config = base64.b64decode(properties["osProfile"]["customData"]).decode()
    script = base64.b64decode(yaml.safe_load(cloud_config)["write_files"][0]["content"]).decode()
    assert 'GPU_COUNT="1"' in script.splitlines() and 'K3S_ROLE="none"' in script.splitlines()
    assert recording.exports["gpusPerNode"].value == 1
    assert "instanceTypes" not in recording.exports  # the VM compute has no instance types


def test_the_gpu_page_states_what_the_code_pins() -> None:
    from edge import first_boot

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "deploy" / "gpus.md").read_text()
    for value in (
        first_boot.NVIDIA_DRIVER_BRANCH,
        first_boot.NVIDIA_TOOLKIT_VERSION,
        first_boot.NVIDIA_KEY_FINGERPRINT,
        first_boot.GPU_RERUN_UNIT,
        cluster_manifests.GPU_CHECK_IMAGE,
        cluster_manifests.GPU_CHECK_POD,
        stack_config.INSTANCE_TYPE_NAME + stack_config.GPU_INSTANCE_TYPE_SUFFIX,
        *first_boot.GPU_HOSTS,
    ):
        assert value in page, value
    # The README and Pulumi.yaml point here, and the refusal names this page.
    assert "docs/deploy/gpus.md" in (root / "README.md").read_text()
    assert "docs/deploy/gpus.md" in stack_config.NVV4_REFUSAL
