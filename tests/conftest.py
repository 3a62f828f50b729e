"""Fixtures: real Azurite and OpenSSH on 127.0.0.1, and the Pulumi program under mocks."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import pickle
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import skops.io  # noqa: F401 (imported first on purpose: see below)
import yaml

from tests.harness import pulumi_mocks, services
from tests.harness.arm_server import SOVEREIGN_AUDIENCE, TEST_TENANT, TEST_TOKEN, ArmEndpoint, Reply, serve_arm
from tests.harness.http_proxy import HttpProxy, Wire
from tests.harness.keys import KeyPair, rsa_key

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

ROOT = Path(__file__).resolve().parent.parent
# skops.io is imported above, before any Pulumi program runs in this process. Importing it builds
# its list of trusted scipy ufuncs by looking each one up with getattr on every module in
# sys.modules (skops/io/_utils.py, whichmodule). Once a program has run, sys.modules also holds
# pulumi_azure_native's lazily imported modules (importlib.util.LazyLoader, through pulumi's
# lazy_import), and each such getattr executes one of them: 14 s of a worker's CPU, spent by
# whichever test first loaded a skops model, against under 1 s imported here.
# What pulumi's serialize_provider leaves patched: every dynamic resource it serializes wraps
# pickle._Pickler._batch_setitems and save_dict in one more sorting layer and never restores them
# (pulumi/dynamic/dynamic.py; likely pulumi/pulumi#17803). A `pulumi up` serializes a few dozen
# providers; this suite runs the program hundreds of times in one process, and the chain then
# overflows the recursion limit in any later pickle that uses _Pickler (joblib's model dumps do).
_PICKLER_AS_IMPORTED = (pickle._Pickler._batch_setitems, pickle._Pickler.save_dict)
PROJECT = pulumi_mocks.PROJECT


@pytest.fixture(autouse=True)
def _pickle_restored() -> Iterator[None]:
    yield
    pickle._Pickler._batch_setitems, pickle._Pickler.save_dict = _PICKLER_AS_IMPORTED


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[ArmEndpoint]:
    """The local HTTPS Resource Manager endpoint (tests/harness/arm_server.py), empty."""
    with serve_arm(tmp_path) as endpoint:
        yield endpoint


@pytest.fixture
def sovereign_arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArmEndpoint]:
    """The local endpoint as a sovereign cloud, for providers that make their own clients: it
    serves the cloud's metadata (its own audience) and the token endpoint, and the real credential
    code signs in with the deploy workflow's ARM_* variables (OIDC, a federated token)."""
    with serve_arm(tmp_path) as endpoint:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(endpoint.ca_file))
        for name in [n for n in os.environ if n.startswith(("ARM_", "AZURE_"))]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("ARM_CLIENT_ID", "0c1b5c5e-4a4d-4f8e-9d6b-111111111111")
        monkeypatch.setenv("ARM_TENANT_ID", TEST_TENANT)
        monkeypatch.setenv("ARM_USE_OIDC", "true")
        monkeypatch.setenv("ARM_OIDC_TOKEN", "github-federated-jwt")
        endpoint.fake.script(
            "GET",
            "/metadata/endpoints",
            Reply(200, {"authentication": {"loginEndpoint": endpoint.url + "/", "audiences": [SOVEREIGN_AUDIENCE]}}),
        )
        endpoint.fake.script(
            "POST",
            f"/{TEST_TENANT}/oauth2/v2.0/token",
            Reply(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": TEST_TOKEN}),
        )
        yield endpoint


# --- stack configuration and the program under mocks ------------------------------------------


def dev_stack_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pulumi.dev.yaml as the program would see it, with a generated SSH key pair in place of
    the placeholders, plus `overrides` (None removes a key); keys without the project prefix."""
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = {k.removeprefix(f"{PROJECT}:"): v for k, v in raw.items() if k.startswith(f"{PROJECT}:")}
    key = rsa_key("vm-admin")
    config["hubSshPublicKey"] = key.public_openssh
    config["sshPrivateKey"] = key.private_pem
    for name, value in (overrides or {}).items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    return config


DEV_SECRET_KEYS = ("sshPrivateKey",)


@pytest.fixture
def dev_config() -> dict[str, Any]:
    return dev_stack_config()


def _run_dev_stack(
    overrides: Mapping[str, Any] | None = None,
    *,
    stack: str = "dev",
    secret_keys: tuple[str, ...] = DEV_SECRET_KEYS,
    preview: bool = False,
) -> pulumi_mocks.Recording:
    """__main__.py under mocks with Pulumi.dev.yaml plus `overrides` (None removes a key)."""
    return pulumi_mocks.run_program(dev_stack_config(overrides), secret_keys=secret_keys, stack=stack, preview=preview)


_RECORDINGS: dict[str, pulumi_mocks.Recording] = {}


def recorded_stack(
    overrides: Mapping[str, Any] | None = None,
    *,
    stack: str = "dev",
    secret_keys: tuple[str, ...] = DEV_SECRET_KEYS,
) -> pulumi_mocks.Recording:
    """What `run_stack` returns, from one run per distinct configuration in the session, for tests
    that only read what the program declares (it reads no environment and no clock, and keys are
    cached per label): many modules ask about the same few stacks. Every caller gets its own copy,
    so no test sees another's changes. A test about the run itself (two runs agree, what a run
    leaves patched, the environment a run sees) uses `run_stack`."""
    key = json.dumps([overrides or {}, stack, list(secret_keys)], sort_keys=True)
    if key not in _RECORDINGS:
        _RECORDINGS[key] = _run_dev_stack(overrides, stack=stack, secret_keys=secret_keys)
    return copy.deepcopy(_RECORDINGS[key])


@pytest.fixture
def run_stack() -> Callable[..., pulumi_mocks.Recording]:
    """Run __main__.py under mocks with Pulumi.dev.yaml plus `overrides` (None removes a key), afresh."""
    return _run_dev_stack


# --- real services -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Azurite]:
    """Azurite's blob service, one for the session; tests use their own containers."""
    emulator = services.start_azurite(tmp_path_factory.mktemp("azurite"))
    yield emulator
    emulator.stop()


@pytest.fixture
def wire(azurite: services.Azurite) -> Iterator[Wire]:
    """A recording proxy in front of Azurite: point a client at `wire.proxy.port` to see (and act
    on) what crosses the wire; stopped after the test."""
    with HttpProxy(azurite.port) as proxy:
        yield Wire(proxy)


@pytest.fixture
def container(wire: Wire) -> Iterator[ContainerClient]:
    """A new container on Azurite, every request to it through `wire`: exactly what Azurite would
    see. Deleted after the test. (A module may mean another container by this name.)"""
    from azure.storage.blob import BlobServiceClient

    from training import emulator

    service = BlobServiceClient.from_connection_string(emulator.connection_string(wire.proxy.port))
    client = service.create_container(f"t{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


@pytest.fixture
def ssh_user_key() -> KeyPair:
    return rsa_key("ssh-user")


@pytest.fixture
def start_ssh_server(tmp_path: Path) -> Iterator[Callable[..., services.SshServer]]:
    """Start sshd on 127.0.0.1 (any number per test); all are stopped after the test."""
    started: list[services.SshServer] = []

    def start(
        authorized_keys: list[KeyPair],
        path: list[Path | str] | None = None,
        name: str = "sshd",
        **options: Any,
    ) -> services.SshServer:
        """`options` go to services.start_sshd (host_key_types, port)."""
        kwargs: dict[str, Any] = {} if path is None else {"path": path}
        server = services.start_sshd(tmp_path / name, authorized_keys, **kwargs, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def ssh_server(
    start_ssh_server: Callable[..., services.SshServer], ssh_user_key: KeyPair, tmp_path: Path
) -> services.SshServer:
    """sshd accepting `ssh_user_key`, with `<directory>/shims` first on the sessions' PATH."""
    shims = tmp_path / "sshd" / "shims"
    shims.mkdir(parents=True)
    return start_ssh_server([ssh_user_key], path=[shims, "/usr/local/bin", "/usr/bin", "/bin"])


# --- the slowest modules first -----------------------------------------------------------------

# Each runs trainer processes (MLflow, scikit-learn, skops imports) or builds an environment, and
# --dist loadscope keeps a module on one worker. Started first, they run side by side on the two
# workers while the many quick modules fill in after them, instead of one worker running a slow
# module alone at the end. xdist's own reordering (by number of tests) is off (pyproject addopts).
# scripts/test prints the ten slowest tests: a module that shows up there belongs in this list.
SLOWEST_MODULES_FIRST = (
    "test_serving.py",
    "test_edge_train_package.py",
    "test_training_data.py",
    "test_local_demo.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# --- no service outlives the suite -------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = services.running_services()
    if leaked:
        for service in list(services._RUNNING):
            service.stop()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nFAILED: services left running after the suite (now stopped): {leaked}")


@contextlib.contextmanager
def _run_lock(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder shared by this run's xdist workers (the parent of each worker's base temp; under
    -n0 the base temp itself), held exclusively: the first worker to need a set-up makes it there,
    the others wait, then reuse it."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield shared


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny MLflow models logged by scikit-learn and LightGBM (tests/harness/tiny_models.py), made
    once per run and shared by the workers: tests read them, and copy one before changing it."""
    from tests.harness import tiny_models

    with _run_lock("tiny-models", tmp_path_factory) as shared:
        root = shared / "tiny-models"
        if not root.is_dir():
            building = shared / f"tiny-models.{os.getpid()}"
            made = tiny_models.save_models(building)
            building.rename(root)  # whole or not at all: a worker killed midway leaves no half set
            return {name: root / path.name for name, path in made.items()}
        return {path.name: path for path in sorted(root.iterdir())}
