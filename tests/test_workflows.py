"""The GitOps workflows, checked offline by the same tools a reviewer would run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_there_are_the_two_workflows() -> None:
    assert [w.name for w in WORKFLOWS] == ["deploy.yml", "pull-request.yml"]


def test_workflows_are_valid_for_githubs_schema() -> None:
    result = run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_even_pedantic() -> None:
    result = run("zizmor", "--offline", "--persona", "pedantic", "--format", "plain", ".github/workflows")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_every_action_is_pinned_to_a_full_commit() -> None:
    for workflow in WORKFLOWS:
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    ref = step["uses"].split("@", 1)[1]
                    assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), step["uses"]


def test_workflows_test_with_the_same_command_as_ci_and_the_readme() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "exec scripts/test" in ci
    assert "```bash\nscripts/test\n```" in readme
    for workflow in WORKFLOWS:
        steps = yaml.safe_load(workflow.read_text())["jobs"]["test"]["steps"]
        assert [s.get("run") for s in steps if "run" in s] == ["scripts/test"], workflow.name


def test_deploy_runs_only_behind_the_protected_environment_with_the_policy_pack() -> None:
    deploy = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    up = deploy["jobs"]["up"]
    assert up["environment"] == "production" and up["needs"] == "test"
    pulumi = next(s for s in up["steps"] if "pulumi/actions" in s.get("uses", ""))
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["policyPacks"] == "policy"
    preview = yaml.safe_load((ROOT / ".github/workflows/pull-request.yml").read_text())["jobs"]["preview"]
    step = next(s for s in preview["steps"] if "pulumi/actions" in s.get("uses", ""))
    assert step["with"]["comment-on-pr"] is True and step["with"]["policyPacks"] == "policy"
    for workflow in WORKFLOWS:  # Azure by OIDC: no client secret for the cloud side anywhere
        assert not re.search(r"(?<!HUB_)ARM_CLIENT_SECRET", workflow.read_text()), workflow.name
