"""`submit` on a GPU stack, through the real azure-ai-ml MLClient and the local Resource Manager
stand-in: the instance type reaches the job; a GPU instance type on a CPU-only stack, an instance
type the compute does not offer, or one in the mode without instance types is refused before any
request; on a GPU VM (virtual-machine mode) every job gets the GPUs through Docker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_training_jobs import MOUNT, arm, job_put, outputs_file, submit, workspace  # noqa: F401 (fixtures)
from training import cli, jobs, stack_outputs

GPU_STACK = {"edgeComputeMode": "kubernetes", "gpusPerNode": 2, "instanceTypes": ["edge-training", "edge-training-gpu"]}
CPU_STACK = {"edgeComputeMode": "kubernetes", "gpusPerNode": 0, "instanceTypes": ["edge-training"]}


def job_file(tmp_path: Path, instance_type: str) -> Path:
    """The churn example as a data scientist's own project: its folder copied, the job file in it."""
    project = tmp_path / "churn"
    shutil.copytree(jobs.EXAMPLES / "churn", project)
    path = project / "job.yml"
    path.write_text(path.read_text() + f"resources:\n  instance_type: {instance_type}\n")
    return path


def test_instance_type_flag_reaches_the_job_on_a_gpu_stack(tmp_path, workspace) -> None:  # noqa: F811
    assert submit(tmp_path, "--prefix", "churn/", "--instance-type", "edge-training-gpu", **GPU_STACK) == cli.OK
    body = job_put(workspace).body["properties"]
    assert body["resources"]["instanceType"] == "edge-training-gpu"
    assert "dockerArgs" not in body["resources"]  # no docker_args on Kubernetes


def test_the_job_files_instance_type_reaches_the_job(tmp_path, workspace) -> None:  # noqa: F811
    assert submit(tmp_path, "-f", str(job_file(tmp_path, "edge-training-gpu")), **GPU_STACK) == cli.OK
    assert job_put(workspace).body["properties"]["resources"]["instanceType"] == "edge-training-gpu"


def test_the_flag_overrides_the_job_files_instance_type(tmp_path, workspace) -> None:  # noqa: F811
    path = job_file(tmp_path, "edge-training-gpu")
    assert submit(tmp_path, "-f", str(path), "--instance-type", "edge-training", **GPU_STACK) == cli.OK
    assert job_put(workspace).body["properties"]["resources"]["instanceType"] == "edge-training"


@pytest.mark.parametrize(
    ("argv", "stack", "message"),
    [
        (
            ("--instance-type", "edge-training-gpu"),
            CPU_STACK,
            "instance_type 'edge-training-gpu' asks for a GPU, and stack 'dev' has none",
        ),
        # A stack from before GPUs were supported says nothing: it has none.
        (("--instance-type", "edge-training-gpu"), {"edgeComputeMode": "kubernetes"}, "asks for a GPU"),
        (
            ("--instance-type", "large"),
            GPU_STACK,
            "'large' is not one of the compute's: edge-training, edge-training-gpu",
        ),
        (("--instance-type", "Edge GPU"), GPU_STACK, "is not an instance type name"),
        (
            ("--instance-type", "edge-training"),
            {"gpusPerNode": 1},
            "the virtual-machine compute has no instance types; it gives its 1 GPU(s) with every job",
        ),
        (("--instance-type", "edge-training-gpu"), {}, "asks for a GPU, and stack 'dev' has none"),
    ],
)
def test_a_wrong_instance_type_is_refused_before_any_request(tmp_path, workspace, capsys, argv, stack, message) -> None:  # noqa: F811
    assert submit(tmp_path, "--prefix", "churn/", *argv, **stack) == cli.USAGE
    assert message in capsys.readouterr().err
    assert workspace.fake.requests == []


def test_a_gpu_vm_gives_every_job_its_gpus_through_docker(tmp_path, workspace) -> None:  # noqa: F811
    assert submit(tmp_path, "--prefix", "churn/", gpusPerNode=1) == cli.OK
    assert job_put(workspace).body["properties"]["resources"]["dockerArgs"] == f"{MOUNT} --gpus all"


def test_a_cpu_vm_gives_no_gpu_flag(tmp_path, workspace) -> None:  # noqa: F811
    assert submit(tmp_path, "--prefix", "churn/") == cli.OK
    assert job_put(workspace).body["properties"]["resources"]["dockerArgs"] == MOUNT


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gpusPerNode": -1}, "gpusPerNode -1 is not a number of GPUs"),
        ({"gpusPerNode": "2"}, "gpusPerNode '2' is not a number of GPUs"),
        ({"instanceTypes": "edge-training"}, "instanceTypes 'edge-training' is not a list"),
        ({"instanceTypes": ["edge-training", ""]}, "is not a list of instance type names"),
    ],
)
def test_malformed_gpu_outputs_are_one_clear_error(tmp_path, values, message) -> None:
    with pytest.raises(stack_outputs.OutputsError, match=message):
        stack_outputs.load(outputs_file=outputs_file(tmp_path, **values))


def test_gpu_outputs_are_read_typed(tmp_path) -> None:
    outputs = stack_outputs.load(outputs_file=outputs_file(tmp_path, **GPU_STACK))
    assert outputs.gpusPerNode == 2
    assert outputs.instanceTypes == ("edge-training", "edge-training-gpu")
    settings = jobs.SubmitSettings.from_outputs(outputs)
    assert (settings.gpus, settings.instance_types) == (2, ("edge-training", "edge-training-gpu"))


# --- what a job sees: edge_train.accelerators (no CUDA needed) -------------------------------------


@pytest.mark.parametrize(
    ("smi", "expected"),
    [
        (
            'echo "GPU 0: Tesla V100-PCIE-16GB (UUID: GPU-1a)"; echo "GPU 1: Tesla V100-PCIE-16GB (UUID: GPU-2b)"\n',
            ("Tesla V100-PCIE-16GB", "Tesla V100-PCIE-16GB"),
        ),
        # What nvidia-smi says on a VM whose driver is not loaded, with its exit status.
        ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n', ()),
        ("echo 'No devices were found'\n", ()),
        # A driver in a bad state lists some and fails: no GPU is claimed.
        (
            'echo "GPU 0: Tesla V100-PCIE-16GB (UUID: GPU-1a)"; echo "Unable to determine the device handle for GPU1"; '
            "exit 15\n",
            (),
        ),
        (None, ()),  # no nvidia-smi at all: a laptop, a CPU node
    ],
)
def test_visible_gpus_reads_nvidia_smi_and_never_needs_cuda(tmp_path, monkeypatch, smi, expected) -> None:
    from tests.harness.services import restricted_bin, write_shim
    from training.src.edge_train import accelerators

    stubs = restricted_bin(tmp_path / "bin", ["sh", "echo"])
    if smi is not None:
        write_shim(stubs, "nvidia-smi", smi)
    monkeypatch.setenv("PATH", str(stubs))
    assert accelerators.visible_gpus() == expected
