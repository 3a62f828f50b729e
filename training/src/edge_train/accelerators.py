"""The GPUs a training process can use, found without loading CUDA (issue 24).

Training code runs the same way on a laptop, on the edge VM and in a job. On an NCv3 stack a job
that asked for the GPU instance type (or any job on a GPU VM in virtual-machine mode) sees the
node's NVIDIA GPUs; elsewhere it sees none. `visible_gpus()` says which, so code can choose its
device and a run can record where it ran, and nothing here needs a CUDA library. The NVIDIA
container runtime mounts nvidia-smi into GPU containers (its "utility" capability, on by default).
"""

from __future__ import annotations

import re
import shutil
import subprocess

NVIDIA_SMI_TIMEOUT_SECONDS = 10
# `nvidia-smi -L`: "GPU 0: Tesla V100-PCIE-16GB (UUID: GPU-...)", one line per GPU.
_GPU_LINE = re.compile(r"GPU \d+: (?P<name>.+?) \(UUID: [^)]+\)")


def visible_gpus() -> tuple[str, ...]:
    """The names of the NVIDIA GPUs this process can use; () without nvidia-smi, a driver or a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    return tuple(m["name"] for line in done.stdout.splitlines() if (m := _GPU_LINE.fullmatch(line.strip())))
