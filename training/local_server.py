"""`serve --local`: the model image's server process, run here on an MLflow model folder.

The image (training/serving/Dockerfile) runs Microsoft's inference server under gunicorn with our
score.py and worker; this module runs the very same command (read from the Dockerfile's CMD) with
the bind address changed to 127.0.0.1 and --chdir to training/serving/, in a virtualenv built
from the image's own requirements.txt plus the model's requirements.txt, as the image installs
them. That virtualenv is separate from the project's: the inference server pins opentelemetry
and pydantic to versions the project's lock cannot take. It is built once per content of the two.

The server runs in its own session (so a Ctrl-C reaches us, and we stop it in order), and is
told to end if this process dies (PR_SET_PDEATHSIG), so a killed `serve --local` leaves no
gunicorn behind.
"""

from __future__ import annotations

import contextlib
import ctypes
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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from clients.deadline import Deadline, poll_until
from training import mlflow_model

log = logging.getLogger(__name__)

SERVING = Path(__file__).resolve().parent / "serving"
DOCKERFILE = SERVING / "Dockerfile"
REQUIREMENTS = SERVING / "requirements.txt"
SCORE = SERVING / "score.py"
WORKER = SERVING / "server_worker.py"
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


MAX_WORKERS = 16


def server_command(python: Path, host: str, port: int, workers: int | None = None) -> list[str]:
    """The image's CMD, bound to `host:port`; `workers`: that many gunicorn workers instead of the
    image's (each loads the model: one is enough on a laptop, and starts in half the CPU)."""
    command = image_command()
    if command[0] != "gunicorn":
        raise ServeError(f"{DOCKERFILE}: CMD runs {command[0]}, expected gunicorn")
    command[command.index("--bind") + 1] = f"{host}:{port}"
    if workers is not None:
        if isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
            raise ServeError(f"workers must be 1 to {MAX_WORKERS}, not {workers!r}")
        if "--workers" not in command:
            raise ServeError(f"{DOCKERFILE}: CMD sets no --workers to change")
        command[command.index("--workers") + 1] = str(workers)
    if "--chdir" in command:  # where score.py and server_worker.py are: the image's app root
        command[command.index("--chdir") + 1] = str(SERVING)
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


def serving_virtualenv(
    root: Path = DEFAULT_ROOT, requirements: Path = REQUIREMENTS, model_requirements: Path | None = None
) -> Path:
    """The python of a virtualenv holding requirements.txt (and the model's), built on first use.

    Built in a temporary folder and renamed into place, so a half-built one is never used and two
    processes building at once both end with one complete virtualenv."""
    files = [requirements, *([model_requirements] if model_requirements else [])]
    digest = hashlib.sha256(b"\0".join(f.read_bytes() for f in files)).hexdigest()[:12]
    final = root / f"serving-venv-{digest}"
    python = final / "bin" / "python"
    if python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".serving-venv-", dir=root))
    try:
        log.info("building the serving virtualenv from %s (once)", " and ".join(map(str, files)))
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=300)
        done = subprocess.run(
            [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *(a for f in files for a in ("-r", str(f)))],
            capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
            raise ServeError(f"installing {' and '.join(map(str, files))} failed:\n{tail}")
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


def _probe(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own http://127.0.0.1 URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def check_model_dir(model_dir: Path) -> Path:
    """The MLflow model folder at or below `model_dir` (exactly one), or ServeError saying why not."""
    try:
        return mlflow_model.find(model_dir)
    except mlflow_model.ModelFolderError as error:
        raise ServeError(f"--model {error} (`python -m training run --local` trains one)") from None


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached `serve --local`."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def serve(
    model_dir: Path, root: Path = DEFAULT_ROOT, host: str = "127.0.0.1", port: int = 5001, workers: int | None = None
) -> int:
    """`serve --local`: run until interrupted or terminated (then stop the server and return 0);
    the server's exit code if it stops by itself."""
    folder = check_model_dir(model_dir)
    model = folder / "requirements.txt"
    python = serving_virtualenv(root, model_requirements=model if model.is_file() else None)
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with running(folder, python, host=host, port=port, workers=workers) as server:
            log.info("liveness: GET %s/   scoring: POST %s/score   (Ctrl-C stops)", server.url, server.url)
            code = server.process.wait()
            raise ServeError(f"the server stopped with {code}:\n{server.log_tail()}")
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: ask for SIGTERM when its parent dies, whatever kills the
    parent (prctl(2)). prctl is looked up here, before the fork: the child only calls it."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@contextlib.contextmanager
def running(
    model_dir: Path,
    python: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    ready_seconds: float = 120.0,
    environment: Mapping[str, str] | None = None,
    workers: int | None = None,
) -> Iterator[RunningServer]:
    """Start the server, wait until its liveness route answers 200, stop it on exit.

    Port 0 lets the system choose; the address is read from gunicorn's "Listening at" line.
    `environment` adds variables (tests shorten server_worker's deadlines with it)."""
    model_dir = check_model_dir(model_dir)
    process = subprocess.Popen(
        server_command(python, host, port, workers),
        env={**server_environment(model_dir), **(environment or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_end_with_parent(),
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
        deadline = Deadline(ready_seconds)
        if not bound.wait(deadline.remaining()) or not address:
            raise ServeError(f"the server did not start:\n{server.log_tail()}")
        server = RunningServer(address[0], process, output)

        def ready() -> bool | None:
            # Readiness: GET / answers once a worker has imported score.py and run init().
            if _probe(f"{server.url}/", deadline.cap(2.0)):
                return True
            if process.poll() is not None:
                raise ServeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
            return None

        if poll_until(ready, deadline, interval=0.2) is None:
            raise ServeError(f"the server did not answer GET / within {ready_seconds:.0f}s:\n{server.log_tail()}")
        yield server
    finally:
        if process.poll() is None:
            # The whole group: gunicorn's master and its workers, which stop their requests in order.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        reader.join(timeout=10)
