"""The deployed stack as the training CLI sees it: `pulumi stack output --json`, or a JSON file.

The CLI never imports the Pulumi program; these names are the contract (docs/train/index.md, "Commands").
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

COMPUTE_MODES = ("virtual-machine", "kubernetes")


class OutputsError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackOutputs:
    stackName: str
    experimentName: str
    azureSubscriptionId: str
    resourceGroupName: str
    workspaceName: str
    registryLoginServer: str
    registryName: str
    computeName: str
    hubBlobEndpoint: str
    hubDataContainer: str
    hubVmPublicIp: str
    hubVmAdminUsername: str
    # Optional: stacks from before these outputs existed mean the defaults.
    edgeComputeMode: str = "virtual-machine"
    """"kubernetes" (Arc-enabled cluster on the Hub) or "virtual-machine" (the attached VM)."""
    hubBlobApiVersion: str = "2019-07-07"
    """The x-ms-version the Hub's blob service accepts (Hub storage pins 2019-07-07)."""
    hubCaCertificates: str = ""
    """The CA certificates (PEM) that sign the Hub's endpoints (hubCaCertificates); empty: public roots."""
    sshHostKeyFingerprint: str = ""
    """Recorded by the SSH attach: required in virtual-machine mode; empty in kubernetes mode,
    where nothing attaches over SSH."""
    gpusPerNode: int = 0
    """NVIDIA GPUs of each edge node (hubVmSize's); 0 on a CPU-only stack, and on stacks from
    before GPUs were supported."""
    instanceTypes: tuple[str, ...] = ()
    """The Kubernetes compute's instance types (kubernetes mode); () when the stack predates them."""

    @classmethod
    def from_mapping(cls, values: Any, source: str) -> StackOutputs:
        if not isinstance(values, Mapping):
            raise OutputsError(
                f"{source} holds {type(values).__name__}, not the JSON object `pulumi stack output --json` prints"
            )
        required = [f.name for f in fields(cls) if f.default is MISSING]
        optional = [f.name for f in fields(cls) if f.default is not MISSING]
        missing = [n for n in required if not values.get(n)]
        if missing:
            raise OutputsError(
                f"{source} lacks the stack outputs {', '.join(missing)}: run `pulumi up` for the stack first, "
                "or pass --outputs with a file from `pulumi stack output --json`"
            )
        chosen = {n: str(values[n]) for n in required} | {
            n: str(values[n]) for n in optional if values.get(n) and n not in _TYPED
        }
        outputs = cls(**chosen, **_typed_outputs(values, source))
        if outputs.edgeComputeMode not in COMPUTE_MODES:
            raise OutputsError(
                f"{source}: edgeComputeMode {outputs.edgeComputeMode!r} is not one of {', '.join(COMPUTE_MODES)}"
            )
        if outputs.edgeComputeMode == "virtual-machine" and not outputs.sshHostKeyFingerprint:
            raise OutputsError(
                f"{source} lacks the stack output sshHostKeyFingerprint, which the virtual-machine mode's attach "
                "records: run `pulumi up` for the stack first"
            )
        return outputs


_TYPED = ("gpusPerNode", "instanceTypes")


def _typed_outputs(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The outputs that are not strings (issue 24): a GPU count and a list of instance type names."""
    typed: dict[str, Any] = {}
    gpus = values.get("gpusPerNode")
    if gpus is not None:
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise OutputsError(f"{source}: gpusPerNode {gpus!r} is not a number of GPUs")
        typed["gpusPerNode"] = gpus
    names = values.get("instanceTypes")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise OutputsError(f"{source}: instanceTypes {names!r} is not a list of instance type names")
        typed["instanceTypes"] = tuple(names)
    return typed


def load(stack: str | None = None, outputs_file: Path | None = None) -> StackOutputs:
    values, source = load_values(stack, outputs_file)
    return StackOutputs.from_mapping(values, source)


def load_values(stack: str | None = None, outputs_file: Path | None = None) -> tuple[dict[str, Any], str]:
    """Every output as read (optional ones included, e.g. edgeComputeMode), and where from."""
    if outputs_file is not None:
        try:
            values = json.loads(outputs_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OutputsError(f"--outputs {outputs_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise OutputsError(f"--outputs {outputs_file} cannot be read as UTF-8 text ({error})") from None
        except json.JSONDecodeError as error:
            raise OutputsError(f"--outputs {outputs_file} is not JSON ({error})") from None
        return _object(values, f"--outputs {outputs_file}"), str(outputs_file)
    command = ["pulumi", "stack", "output", "--json", *(["--stack", stack] if stack else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise OutputsError("the pulumi CLI is not installed: pass --outputs <file> instead") from None
    except subprocess.TimeoutExpired:
        raise OutputsError(f"`{' '.join(command)}` did not answer within 120 s: pass --outputs <file>") from None
    if done.returncode != 0:
        raise OutputsError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    try:
        values = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise OutputsError(f"`{' '.join(command)}` did not print JSON ({error})") from None
    return _object(values, f"`{' '.join(command)}`"), f"stack {stack or '(selected)'}"


def _object(values: Any, source: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise OutputsError(
            f"{source} holds {type(values).__name__}, not the JSON object `pulumi stack output --json` prints"
        )
    return values
