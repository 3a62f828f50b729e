"""Secrets never leave in a job definition, a dry run or a code snapshot (training/jobs.py's guard,
the CLI's --dry-run), checked through the real CLI against the workspace stand-in: nothing is sent."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.test_training_jobs import arm, submit, user_code, workspace  # noqa: F401 (fixtures)
from training import cli, jobs

SAS_SIG_FIRST = "sig=Zm9vYmFyYmF6cXV4c2VjcmV0&se=2030-01-01&sp=r&sv=2019-07-07&sr=c"
ACCOUNT_KEY = "DefaultEndpointsProtocol=https;AccountName=hub;AccountKey=c2VjcmV0LWtleS12YWx1ZQ=="


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PW", "hunter2"),
        ("ADMIN_PWD", "hunter2"),
        ("PW", "hunter2"),
        ("GPG_PASSPHRASE", "correct horse"),
        ("BLOB_QUERY", SAS_SIG_FIRST),
        ("STORAGE", ACCOUNT_KEY),
    ],
)
def test_secret_shapes_are_recognised(name, value) -> None:
    assert jobs._secret(name, value)


@pytest.mark.parametrize(("name", "value"), [("SIGNAL", "on"), ("PWM_DUTY", "0.5"), ("DESIGN", "signature=x")])
def test_ordinary_names_and_values_are_not_secrets(name, value) -> None:
    assert not jobs._secret(name, value)


@pytest.mark.parametrize(
    "command",
    [
        "AZURE_STORAGE_KEY=abc python fit.py",
        "export DB_PW=hunter2; python fit.py",
        f"python fit.py --sas '{SAS_SIG_FIRST}'",
        f'python fit.py --conn "{ACCOUNT_KEY}"',
    ],
)
def test_the_guard_reads_the_command(tmp_path, workspace, capsys, command) -> None:  # noqa: F811
    code = user_code(tmp_path)
    assert submit(tmp_path, "--code", str(code), "--command", command) == cli.USAGE
    error = capsys.readouterr().err
    assert error.startswith("error: refusing to submit") and "command sets" in error
    for secret in ("hunter2", "Zm9vYmFy", "c2VjcmV0"):
        assert secret not in error
    assert workspace.fake.requests == []


def test_dry_run_redacts_what_the_guard_names(tmp_path, workspace, capsys) -> None:  # noqa: F811
    code = user_code(tmp_path)
    job = {
        "type": "command",
        "code": "my-model",
        "command": f"DB_PW=hunter2 python fit.py --sas '{SAS_SIG_FIRST}'",
        "environment_variables": {"STORAGE": ACCOUNT_KEY, "ADMIN_PWD": "hunter2", "MODE": "fast"},
    }
    (tmp_path / "job.yml").write_text(yaml.safe_dump(job))
    assert code.is_dir()
    assert submit(tmp_path, "-f", str(tmp_path / "job.yml"), "--dry-run") == cli.USAGE
    printed = capsys.readouterr().out
    for secret in ("hunter2", "Zm9vYmFy", "c2VjcmV0"):
        assert secret not in printed
    spec = yaml.safe_load(printed)
    assert spec["environment_variables"]["MODE"] == "fast"  # only secrets are hidden
    assert spec["environment_variables"]["STORAGE"] == "***redacted***"
    assert "STORAGE" in printed.splitlines()[-1] and "ADMIN_PWD" in printed.splitlines()[-1]
    assert workspace.fake.requests == []


@pytest.mark.parametrize(
    "key_file", ["id_rsa", ".ssh/id_ed25519", "deploy.pem", "kubeconfig", ".kube/config", ".env", ".env.local"]
)
def test_a_code_folder_holding_a_key_file_is_refused(tmp_path, workspace, capsys, key_file) -> None:  # noqa: F811
    code = user_code(tmp_path)
    (code / key_file).parent.mkdir(parents=True, exist_ok=True)
    (code / key_file).write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert submit(tmp_path, "--code", str(code), "--command", "python fit.py") == cli.USAGE
    error = capsys.readouterr().err
    assert f"holds {key_file}, a key or credential file" in error
    assert workspace.fake.requests == []


def test_a_key_file_listed_in_amlignore_is_left_out_and_allowed(tmp_path) -> None:
    code = user_code(tmp_path)
    (code / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (code / ".amlignore").write_text("*.csv\nid_rsa\n")
    assert jobs.code_findings(code) == []


def test_a_code_folder_outside_the_project_is_refused_unless_allowed(tmp_path, workspace, capsys) -> None:  # noqa: F811
    code = user_code(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    # The project is the git work tree holding the job file, else its folder: a repository
    # around the job file alone still leaves ../my-model outside.
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    job = {
        "type": "command",
        "code": "../my-model",
        "command": "python fit.py",
        "environment": {"image": "python:3.11"},
    }
    (project / "job.yml").write_text(yaml.safe_dump(job))
    assert submit(tmp_path, "-f", str(project / "job.yml"), "--dry-run") == cli.USAGE
    assert f"code folder {code} is outside the project {project}" in capsys.readouterr().err
    assert submit(tmp_path, "-f", str(project / "job.yml"), "--dry-run", "--allow-code-outside-project") == cli.OK
    assert workspace.fake.requests == []
    # One repository holding both (jobs/ beside the code): the project's own code.
    shutil.rmtree(project / ".git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert submit(tmp_path, "-f", str(project / "job.yml"), "--dry-run") == cli.OK
