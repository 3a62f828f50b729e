"""The deployed stack as the training CLI sees it: `pulumi stack output --json`, or a JSON file.

The CLI never imports the Pulumi program; these names are the contract (README "Stack outputs").
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


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
    sshHostKeyFingerprint: str

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str) -> StackOutputs:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if not values.get(n)]
        if missing:
            raise OutputsError(
                f"{source} lacks the stack outputs {', '.join(missing)}: run `pulumi up` for the stack first, "
                "or pass --outputs with a file from `pulumi stack output --json`"
            )
        return cls(**{n: str(values[n]) for n in names})


def load(stack: str | None = None, outputs_file: Path | None = None) -> StackOutputs:
    values, source = load_values(stack, outputs_file)
    return StackOutputs.from_mapping(values, source)


def load_values(stack: str | None = None, outputs_file: Path | None = None) -> tuple[dict[str, Any], str]:
    """Every output as read (optional ones included, e.g. edgeComputeMode), and where from."""
    if outputs_file is not None:
        try:
            values = json.loads(outputs_file.read_text())
        except FileNotFoundError:
            raise OutputsError(f"{outputs_file} does not exist") from None
        except json.JSONDecodeError as error:
            raise OutputsError(f"{outputs_file} is not JSON ({error})") from None
        if not isinstance(values, dict):
            raise OutputsError(f"{outputs_file} is not a JSON object of stack outputs")
        return values, str(outputs_file)
    command = ["pulumi", "stack", "output", "--json", *(["--stack", stack] if stack else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise OutputsError("the pulumi CLI is not installed: pass --outputs <file> instead") from None
    if done.returncode != 0:
        raise OutputsError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    return json.loads(done.stdout), f"stack {stack or '(selected)'}"
