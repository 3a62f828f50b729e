"""The two locks: a deploy installs the runtime lock only, and the tests run its exact versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {name.lower().replace("_", "-"): version for name, version in _PIN.findall(text)}


def declared(group: list[str]) -> set[str]:
    return {re.split(r"[=<>\[ ;]", spec, maxsplit=1)[0].lower() for spec in group}


def test_the_runtime_lock_holds_no_test_tooling() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = pins("requirements.txt")
    assert declared(project["dependencies"]) <= set(runtime)
    test_only = declared(project["optional-dependencies"]["dev"]) - declared(project["dependencies"])
    leaked = {name for name in test_only if name in runtime and name != "six"}  # six: also a runtime transitive
    assert not leaked, f"test-only packages in the runtime lock: {sorted(leaked)}"
    assert "pytest" not in runtime and "azure-mgmt-compute" not in runtime


def test_the_dev_lock_runs_the_runtime_versions() -> None:
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert set(runtime) <= set(dev)
    assert {n: v for n, v in dev.items() if n in runtime} == runtime


def test_every_install_line_uses_hashes_and_the_right_lock() -> None:
    deploying = (ROOT / "docs" / "deploy" / "index.md").read_text()
    assert "pip install --require-hashes -r requirements.txt" in deploying  # deploying: runtime only
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "--require-hashes -r requirements-dev.txt" in setup
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        for line in workflow.read_text().splitlines():
            if "pip install" in line:
                assert "--require-hashes -r requirements.txt" in line, f"{workflow.name}: {line.strip()}"
