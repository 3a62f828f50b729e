"""An MLflow model folder as `serve`, `package` and `register` see it: where its MLmodel is, its
flavors, its signature and its pinned requirements.

MLflow's model format (mlflow.org, "MLflow Models"): a folder with an `MLmodel` YAML file naming
the flavors (`python_function` is the one every server loads), the `signature` (inputs and
outputs as JSON-encoded schemas) and, beside it, `requirements.txt` (what `pip install` needs to
load it, written by `log_model`/`save_model`). Reading it needs PyYAML only: no model is loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# One requirement pinned to one version: NAME==VERSION (extras allowed), nothing else on the line.
# Ranges, URLs, paths and pip options (-r, --index-url, -e) would let the image's content drift or
# reach outside the registries the build is allowed to use.
PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


class ModelFolderError(ValueError):
    """A folder that is not one MLflow model, or a model that cannot be served as it is."""


@dataclass(frozen=True)
class MlflowModel:
    path: Path
    """The folder holding MLmodel."""
    flavors: dict[str, Any]
    inputs: list[dict[str, Any]] | None
    """The signature's input schema (MLflow's JSON form), None without a signature."""
    requirements: list[str] | None
    """requirements.txt's lines (comments and blanks dropped), None without the file."""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_columns(self) -> int | None:
        """How many columns the model takes: the training data's width for a tabular model."""
        if not self.inputs:
            return None
        if len(self.inputs) == 1 and self.inputs[0].get("type") == "tensor":
            shape = self.inputs[0].get("tensor-spec", {}).get("shape") or []
            return int(shape[-1]) if len(shape) == 2 and int(shape[-1]) > 0 else None
        return len(self.inputs)

    def serving_problems(self) -> list[str]:
        """Why this model cannot be packaged as it is; empty when it can."""
        problems = []
        if "python_function" not in self.flavors:
            problems.append("it has no python_function flavor, which the server loads")
        if not self.inputs:
            problems.append("it has no signature (log it with signature=infer_signature(X, model.predict(X)))")
        if self.requirements is None:
            problems.append("it has no requirements.txt beside MLmodel")
        else:
            loose = [r for r in self.requirements if not PINNED.match(r)]
            if loose:
                problems.append(f"requirements.txt has lines that are not NAME==VERSION: {', '.join(loose)}")
            elif not self.requirements:
                problems.append("requirements.txt is empty")
        return problems


def find(folder: Path) -> Path:
    """The one folder at or below `folder` that holds an MLmodel file."""
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a folder")
    found = sorted(p.parent for p in folder.rglob("MLmodel") if p.is_file())
    if not found:
        raise ModelFolderError(f"{folder} holds no MLflow model (no MLmodel file in it)")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        raise ModelFolderError(f"{folder} holds {len(found)} MLflow models ({names}): name one of them")
    return found[0]


def read(folder: Path) -> MlflowModel:
    """The MLflow model at or below `folder`."""
    path = find(folder)
    try:
        document = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelFolderError(f"{path / 'MLmodel'} cannot be read as YAML ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise ModelFolderError(f"{path / 'MLmodel'} is not an MLmodel file (no flavors)")
    inputs = None
    signature = document.get("signature")
    if isinstance(signature, dict) and isinstance(signature.get("inputs"), str):
        try:
            parsed = json.loads(signature["inputs"])
        except ValueError:
            raise ModelFolderError(f"{path / 'MLmodel'}: the signature's inputs are not JSON") from None
        inputs = parsed if isinstance(parsed, list) else None
    requirements = None
    if (path / "requirements.txt").is_file():
        lines = (path / "requirements.txt").read_text(encoding="utf-8").splitlines()
        requirements = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return MlflowModel(path, document["flavors"], inputs, requirements, document)
