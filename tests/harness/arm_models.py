"""Check an ARM request body against Microsoft's generated model of its API version.

The models carry their rules in `_validation` (required, readonly, lengths, patterns, bounds).
Older msrest models apply them in `validate()`; the newer generator (azure-mgmt-compute 29.x)
dropped client-side validation but kept the metadata, so the same rules are applied here.
"""

from __future__ import annotations

import json
import re
from typing import Any


def _rules_broken(value: Any, rules: dict[str, Any], where: str) -> list[str]:
    problems = []
    if "max_length" in rules and len(value) > rules["max_length"]:
        problems.append(f"{where} is longer than {rules['max_length']}")
    if "min_length" in rules and len(value) < rules["min_length"]:
        problems.append(f"{where} is shorter than {rules['min_length']}")
    if "pattern" in rules and not re.search(rules["pattern"], value):
        problems.append(f"{where} does not match {rules['pattern']}")
    if "maximum" in rules and value > rules["maximum"]:
        problems.append(f"{where} is above {rules['maximum']}")
    if "minimum" in rules and value < rules["minimum"]:
        problems.append(f"{where} is below {rules['minimum']}")
    return problems


def validation_errors(model: Any, where: str | None = None) -> list[str]:
    """Every rule of the model (and of the models inside it) that its values break."""
    where = where or type(model).__name__
    problems: list[str] = []
    if hasattr(model, "validate"):
        problems += [str(error) for error in model.validate() or []]
    for attr, rules in getattr(model, "_validation", {}).items():
        value = getattr(model, attr, None)
        if value is None:
            if rules.get("required"):
                problems.append(f"{where}.{attr} is required")
            continue
        if rules.get("readonly"):
            problems.append(f"{where}.{attr} is read-only and must not be sent")
        problems += _rules_broken(value, rules, f"{where}.{attr}")
    for attr in getattr(model, "_attribute_map", {}):
        value = getattr(model, attr, None)
        children = value if isinstance(value, list) else [value]
        for index, child in enumerate(children):
            if hasattr(child, "_attribute_map"):
                suffix = f"[{index}]" if isinstance(value, list) else ""
                problems += validation_errors(child, f"{where}.{attr}{suffix}")
    return problems


def check_body(model_type: type, body: dict[str, Any]) -> list[str]:
    """Problems with `body` for `model_type`: broken rules, and fields the model does not know
    (the model drops them, so the round trip would not give the body back)."""
    model = model_type.deserialize(body)
    problems = validation_errors(model)
    sent = json.loads(json.dumps(body))
    if model.serialize() != sent:
        problems.append(f"round trip differs: sent {sent}, model kept {model.serialize()}")
    return problems


def rest_field_problems(
    body: dict[str, Any], model: type, nested: dict[type, dict[str, type]], where: str = "body"
) -> list[str]:
    """For TypeSpec-generated models (azure-ai-ml's arm_ml_service): fields of `body` the model
    does not have, or marks read-only; `nested` says which model describes which nested object."""
    model()  # the generated models build their field table on first use
    fields = {f._rest_name: f for f in model._attr_to_rest_field.values()}
    problems = []
    for key, value in body.items():
        if key not in fields:
            problems.append(f"{where}.{key} is not in {model.__name__}")
        elif getattr(fields[key], "_visibility", None) == ["read"]:
            problems.append(f"{where}.{key} is read-only")
        elif isinstance(value, dict) and key in nested.get(model, {}):
            problems += rest_field_problems(value, nested[model][key], nested, f"{where}.{key}")
    return problems
