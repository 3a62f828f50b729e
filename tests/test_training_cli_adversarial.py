"""Bad input to every training command and to the job entrypoint, one row each: a non-zero exit,
one line on stderr naming the input, no traceback, and no secret in the message. Nothing is
sent: each row also runs with the Resource Manager stand-in as the workspace, which must see no
request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from examples.churn import estimator
from examples.churn import train as churn
from tests.harness.arm_server import ArmEndpoint, StaticCredential, serve_arm
from tests.test_training_cli import RedirectingTransport
from tests.test_training_jobs import OUTPUTS
from training import cli
from training.workspace import ml_client

ROOT = Path(__file__).resolve().parent.parent
SECRET = "c2VjcmV0LWFjY291bnQta2V5"  # an account key as a bad input would carry it


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    names: str
    """What the one line must name (the flag, file or value at fault)."""
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


GOOD_OUTPUTS = json.dumps(OUTPUTS).encode()
JOB = b"type: command\ncode: .\ncommand: python fit.py\n"
S = "--outputs=outputs.json"  # a valid outputs file, for rows about something else
CASES = {
    # stack outputs
    "outputs holding a list": Case(("submit", "--outputs=o.json"), "o.json", {"o.json": b"[]"}),
    "outputs holding null": Case(("submit", "--outputs=o.json"), "o.json", {"o.json": b"null"}),
    "outputs not UTF-8": Case(("submit", "--outputs=o.json"), "o.json", {"o.json": b'{"a": "\xff\xfe"}'}),
    "outputs not JSON": Case(("submit", "--outputs=o.json"), "o.json", {"o.json": b"{"}),
    "outputs missing": Case(("submit", "--outputs=none.json"), "none.json"),
    "outputs lacking keys": Case(("submit", "--outputs=o.json"), "computeName", {"o.json": b'{"stackName": "x"}'}),
    "unknown compute mode": Case(
        ("submit", "--outputs=o.json"),
        "edgeComputeMode",
        {"o.json": json.dumps({**OUTPUTS, "edgeComputeMode": "docker"}).encode()},
    ),
    # submit
    "file URL as Hub input": Case(("submit", S, "--input", "data=file:///data"), "file:///data"),
    "Hub input with a bad container": Case(("submit", S, "--input", "data=hub://UP/x"), "UP"),
    "Hub input leaving its container": Case(("submit", S, "--input", "data=hub://training-data/../x"), ".."),
    "input without a name": Case(("submit", S, "--input", "hub://training-data/x"), "hub://training-data/x"),
    "prefix leaving the container": Case(("submit", S, "--prefix", "../other/"), "../other/"),
    "prefix from the root": Case(("submit", S, "--prefix", "/etc/"), "/etc/"),
    "code folder missing": Case(("submit", S, "--code", "nowhere", "--command", "python x.py"), "nowhere"),
    "code without command": Case(("submit", S, "--code", "."), "--command"),
    "command without code": Case(("submit", S, "--command", "python x.py"), "--command"),
    "job file missing": Case(("submit", S, "-f", "none.yml"), "none.yml"),
    "job file not YAML": Case(("submit", S, "-f", "job.yml"), "job.yml", {"job.yml": b"command: [\n"}),
    "job file not a mapping": Case(("submit", S, "-f", "job.yml"), "job.yml", {"job.yml": b"- a\n"}),
    "job file not UTF-8": Case(("submit", S, "-f", "job.yml"), "job.yml", {"job.yml": b"command: \xff\n"}),
    "job without command": Case(("submit", S, "-f", "job.yml"), "no command", {"job.yml": b"type: command\ncode: .\n"}),
    "job on another compute": Case(
        ("submit", S, "-f", "job.yml"), "gpu-cluster", {"job.yml": JOB + b"compute: azureml:gpu-cluster\n"}
    ),
    "job of another type": Case(
        ("submit", S, "-f", "job.yml"), "'pipeline'", {"job.yml": b"type: pipeline\njobs: {}\n"}
    ),
    "job with a bad Hub input": Case(
        ("submit", S, "-f", "job.yml"), "..", {"job.yml": JOB + b"inputs:\n  d: hub://training-data/../x\n"}
    ),
    "job with its own edge_train": Case(
        ("submit", S, "-f", "job.yml"), "edge_train", {"job.yml": JOB, "edge_train/__init__.py": b""}
    ),
    "job with a secret": Case(
        ("submit", S, "-f", "job.yml"),
        "AZURE_STORAGE_KEY",
        {"job.yml": JOB + f"environment_variables:\n  AZURE_STORAGE_KEY: {SECRET}\n".encode()},
    ),
    "environment file missing": Case(("submit", S, "--environment", "none.yaml"), "none.yaml"),
    "environment and image": Case(("submit", S, "--environment", "e.yaml", "--image", "x"), "--image"),
    "blob API version not a date": Case(("submit", S, "--blob-api-version", "latest"), "latest"),
    "unknown example": Case(("submit", S, "--example", "nope"), "nope"),
    # register
    "lineage holding a list": Case(("register", S, "--job", "j1", "--lineage", "l.json"), "l.json", {"l.json": b"[]"}),
    "lineage without fingerprint": Case(
        ("register", S, "--job", "j1", "--lineage", "l.json"), "l.json", {"l.json": b'{"data_fingerprint": 5}'}
    ),
    "lineage not UTF-8": Case(("register", S, "--job", "j1", "--lineage", "l.json"), "l.json", {"l.json": b"\xff"}),
    "lineage missing": Case(("register", S, "--job", "j1", "--lineage", "none.json"), "none.json"),
    "lineage with bad hyperparameters": Case(
        ("register", S, "--job", "j1", "--lineage", "l.json"),
        "hyperparameters",
        {"l.json": json.dumps({"data_fingerprint": "a" * 64, "hyperparameters": [1]}).encode()},
    ),
    "fingerprint not a hash": Case(("register", S, "--job", "j1", "--data-fingerprint", "xyz"), "'xyz'"),
    "job name with spaces": Case(("register", S, "--job", "bad name", "--data-fingerprint", "a" * 64), "bad name"),
    "model name with a slash": Case(
        ("register", S, "--job", "j1", "--name", "a/b", "--data-fingerprint", "a" * 64), "a/b"
    ),
    # run --local (each stops before the emulator starts)
    "zero rows": Case(("run", "--local", "--rows", "0"), "--rows"),
    "negative rows": Case(("run", "--local", "--rows", "-5"), "--rows"),
    "rows not a number": Case(("run", "--local", "--rows", "many"), "many"),
    "local prefix leaving the container": Case(("run", "--local", "--prefix", "../other/"), "../other/"),
    "local container not a name": Case(("run", "--local", "--container", "Data"), "Data"),
    "local example unknown": Case(("run", "--local", "--example", "nope"), "nope"),
    "connection string on the command line": Case(
        ("run", "--local", "--connection-string", f"AccountKey={SECRET}"),
        "unrecognized arguments: --connection-string AccountKey=***",
    ),
    "connection string garbage": Case(
        ("run", "--local"),
        "$AZURE_STORAGE_CONNECTION_STRING",
        env={"AZURE_STORAGE_CONNECTION_STRING": f"AccountKey={SECRET};x"},
    ),
    "connection string file missing": Case(("run", "--local", "--connection-string-file", "none.txt"), "none.txt"),
    "connection string file garbage": Case(
        ("run", "--local", "--connection-string-file", "c.txt"), "c.txt", {"c.txt": f"AccountKey={SECRET}".encode()}
    ),
    # deploy: the VM's host key is pinned; a kubernetes-mode stack records none, so it must be named
    "edge deploy without a host key to pin": Case(
        (
            "deploy",
            "--outputs=k8s.json",
            "--target",
            "edge",
            "--image",
            "cr.azurecr.io/edge-model@sha256:" + "0" * 64,
            "--ssh-key",
            "id",
            "--token-name",
            "edge-pull",
            "--token-password-file",
            "pw",
        ),
        "--host-key-fingerprint",
        {
            "k8s.json": json.dumps(OUTPUTS | {"edgeComputeMode": "kubernetes", "sshHostKeyFingerprint": ""}).encode(),
            "id": b"not read before the host key is known",
            "pw": SECRET.encode(),
        },
    ),
    # anything else
    "unknown command": Case(("train",), "train"),
}


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArmEndpoint]:
    with serve_arm(tmp_path) as endpoint:
        monkeypatch.setattr(
            "training.workspace.ml_client",
            lambda outputs: ml_client(outputs, credential=StaticCredential(), transport=RedirectingTransport(endpoint)),
        )
        yield endpoint


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_line_naming_it(tmp_path, monkeypatch, capsys, arm, name) -> None:
    case = CASES[name]
    (tmp_path / "outputs.json").write_bytes(GOOD_OUTPUTS)
    for relative, content in case.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    for variable, value in case.env.items():
        monkeypatch.setenv(variable, value)
    try:
        status = cli.main(list(case.argv))
    except SystemExit as exit_:  # argparse
        status = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status not in (0, None)
    assert len(lines) == 1, err
    assert case.names in lines[0]
    assert "Traceback" not in err and "unexpected" not in err
    assert SECRET not in err
    assert arm.fake.requests == []
    assert not (tmp_path / ".edge-training").exists()  # nothing half-created


def test_as_a_user_sees_it_stderr_is_one_line(tmp_path) -> None:
    """The same through `python -m training` in its own process: logging and the SDKs included."""
    (tmp_path / "job.yml").write_bytes(JOB + b"compute: gpu-cluster\n")
    (tmp_path / "o.json").write_bytes(GOOD_OUTPUTS)
    for argv in (("submit", "--outputs", "o.json", "-f", "job.yml"), ("run", "--local", "--rows", "0")):
        done = subprocess.run(
            [sys.executable, "-m", "training", *argv],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == cli.USAGE
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- the job entrypoint ------------------------------------------------------------------------------

ENTRYPOINT_CASES = {
    "zero workers": (["--data", "hub://training-data/x/", "--workers", "0"], "--workers"),
    "zero iterations": (["--data", "hub://training-data/x/", "--max-iter", "0"], "--max-iter"),
    "no data": ([], "--data"),
}


@pytest.mark.parametrize("name", list(ENTRYPOINT_CASES))
def test_the_entrypoint_refuses_bad_arguments_in_one_line(capsys, name) -> None:
    argv, named = ENTRYPOINT_CASES[name]
    with pytest.raises(SystemExit) as exit_:
        churn.main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]


@pytest.mark.parametrize(
    ("data", "named"),
    [("file:///data", "file:///data"), ("hub://training-data/../other/", "'../other/'"), ("hub://X/y", "'X'")],
)
def test_the_entrypoint_refuses_locations_that_are_not_the_hubs(caplog, data, named) -> None:
    assert churn.main(["--data", data]) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert named in record.getMessage() and "\n" not in record.getMessage()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"f0,label\n1.0,1\n0.5,abc\n", "part.csv line 3 holds a value that is not a number"),
        (b"f0,label\n1.0\n", "part.csv line 2 has 1 values"),
        (b"f0,label\n\xff\xfe,1\n", "part.csv is not UTF-8"),
        (b"f0,f1\n1,2\n", "no 'label' column"),
    ],
)
def test_csvs_the_estimator_cannot_read_are_named(tmp_path, content, named) -> None:
    (tmp_path / "part.csv").write_bytes(content)
    with pytest.raises(estimator.DataError, match=named):
        estimator.load_csvs([tmp_path / "part.csv"])


def test_csvs_with_other_columns_are_named(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("f0,label\n1,0\n")
    (tmp_path / "b.csv").write_text("g0,label\n1,1\n")
    with pytest.raises(estimator.DataError, match=r"b\.csv has columns"):
        estimator.load_csvs([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_building_the_parser_imports_no_sdk() -> None:
    """--help must answer at once (its time is measured in bench, not here): the parser may not
    import azure-ai-ml, the blob SDK, scikit-learn or MLflow; the commands import them."""
    probe = (
        "import sys; from training import cli; cli.parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'mlflow', 'pandas', 'numpy') "
        "or m.startswith(('azure.ai.ml', 'azure.storage', 'azure.core', 'azure.identity'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
