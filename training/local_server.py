"""`serve --local`: the model image's server process, run here on a model directory.

The image (training/serving/Dockerfile) runs Microsoft's inference server under gunicorn with our
score.py; this module runs the very same command (read from the Dockerfile's CMD) with the bind
address changed to 127.0.0.1, in a virtualenv built from the image's own requirements.txt. That
virtualenv is separate from the project's: the inference server pins opentelemetry and pydantic
to versions the project's lock cannot take. It is built once per requirements.txt content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SERVING = Path(__file__).resolve().parent / "serving"
DOCKERFILE = SERVING / "Dockerfile"
REQUIREMENTS = SERVING / "requirements.txt"
SCORE = SERVING / "score.py"
DEFAULT_ROOT = Path(".edge-training")
LISTENING = re.compile(r"Listening at: http://([0-9.]+):(\d+)")


class ServeError(RuntimeError):
    pass


def image_command(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The exec-form CMD of the Dockerfile: the one definition of how the server starts."""
    commands = [line for line in dockerfile.read_text().splitlines() if line.startswith("CMD ")]
    if len(commands) != 1:
        raise ServeError(f"{dockerfile} must have exactly one CMD line, has {len(commands)}")
    command = json.loads(commands[0].removeprefix("CMD "))
    if not isinstance(command, list) or "--bind" not in command:
        raise ServeError(f"{dockerfile}: CMD must be the exec form with --bind")
    return [str(part) for part in command]


def server_command(python: Path, host: str, port: int) -> list[str]:
    command = image_command()
    if command[0] != "gunicorn":
        raise ServeError(f"{DOCKERFILE}: CMD runs {command[0]}, expected gunicorn")
    command[command.index("--bind") + 1] = f"{host}:{port}"
    # `python -m gunicorn`: the virtualenv's scripts carry the absolute path it was built at.
    return [str(python), "-m", "gunicorn", *command[1:]]


def server_environment(model_dir: Path, score: Path = SCORE) -> dict[str, str]:
    """What the Dockerfile's ENV sets, pointing at this machine's files."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AZUREML_", "AML_"))}
    environment.update(
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        AML_APP_ROOT=str(score.parent),
        AZUREML_ENTRY_SCRIPT=str(score),
        AZUREML_MODEL_DIR=str(model_dir.resolve()),
    )
    return environment


def serving_virtualenv(root: Path = DEFAULT_ROOT, requirements: Path = REQUIREMENTS) -> Path:
    """The python of a virtualenv holding requirements.txt, built on first use.

    Built in a temporary folder and renamed into place, so a half-built one is never used and two
    processes building at once both end with one complete virtualenv."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    final = root / f"serving-venv-{digest}"
    python = final / "bin" / "python"
    if python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".serving-venv-", dir=root))
    try:
        log.info("building the serving virtualenv from %s (once)", requirements)
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=300)
        done = subprocess.run(
            [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(requirements)],
            capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
            raise ServeError(f"installing {requirements} failed:\n{tail}")
        try:
            building.rename(final)
        except OSError:
            if not python.exists():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return python


@dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen[str]
    output: list[str]

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.output[-lines:])


def _probe(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own http://127.0.0.1 URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir() or not any(model_dir.rglob("model.joblib")):
        raise ServeError(f"--model {model_dir}: no model.joblib in it (`python -m training run --local` trains one)")


def serve(model_dir: Path, root: Path = DEFAULT_ROOT, host: str = "127.0.0.1", port: int = 5001) -> int:
    """`serve --local`: run until interrupted; the server's exit code if it stops by itself."""
    check_model_dir(model_dir)
    python = serving_virtualenv(root)
    try:
        with running(model_dir, python, host=host, port=port) as server:
            log.info("liveness: GET %s/   scoring: POST %s/score   (Ctrl-C stops)", server.url, server.url)
            code = server.process.wait()
            raise ServeError(f"the server stopped with {code}:\n{server.log_tail()}")
    except KeyboardInterrupt:
        return 0


@contextlib.contextmanager
def running(
    model_dir: Path,
    python: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    ready_seconds: float = 120.0,
) -> Iterator[RunningServer]:
    """Start the server, wait until its liveness route answers 200, stop it on exit.

    Port 0 lets the system choose; the address is read from gunicorn's "Listening at" line."""
    check_model_dir(model_dir)
    process = subprocess.Popen(
        server_command(python, host, port),
        env=server_environment(model_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    address: list[str] = []
    bound = threading.Event()

    def read() -> None:
        for line in process.stdout or ():
            output.append(line.rstrip())
            found = LISTENING.search(line)
            if found and not address:
                address.append(f"http://{found.group(1)}:{found.group(2)}")
                bound.set()
        bound.set()  # the process ended: stop waiting

    reader = threading.Thread(target=read, name="serving-output", daemon=True)
    reader.start()
    server = RunningServer("", process, output)
    try:
        deadline = time.monotonic() + ready_seconds
        if not bound.wait(ready_seconds) or not address:
            raise ServeError(f"the server did not start:\n{server.log_tail()}")
        server = RunningServer(address[0], process, output)
        # Readiness: GET / answers once a worker has imported score.py and run init().
        while not _probe(f"{server.url}/"):
            if process.poll() is not None:
                raise ServeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise ServeError(f"the server did not answer GET / within {ready_seconds:.0f}s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        reader.join(timeout=10)
