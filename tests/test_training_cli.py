"""The training CLI: stack outputs, the package request through the real MLClient at the HTTP
boundary, and deploy over real SSH. Submit and register: tests/test_training_jobs.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from clients.deadline import LAST_LOOK_S
from tests.harness import services
from tests.harness.arm_server import ArmEndpoint, RecordingTransport, Reply, StaticCredential
from tests.harness.clock import FakeClock
from tests.harness.keys import KeyPair
from training import cli, deploy, jobs, packaging, stack_outputs
from training.workspace import ml_client


@pytest.fixture(scope="module")
def outputs() -> stack_outputs.StackOutputs:
    """The outputs of the real program under mocks: the CLI's contract with the stack."""
    from tests.conftest import recorded_stack

    # The CLI reads the virtual-machine mode's outputs today (sshHostKeyFingerprint is empty in
    # the Kubernetes mode, which the CLI's side of issue 13 teaches it).
    recording = recorded_stack({"edgeComputeMode": "virtual-machine"})
    return stack_outputs.StackOutputs.from_mapping({k: v.value for k, v in recording.exports.items()}, "test")


# --- stack outputs -----------------------------------------------------------------------------------


def test_the_program_exports_everything_the_cli_reads(outputs) -> None:
    assert outputs.computeName == "edge-vm"
    assert outputs.hubBlobEndpoint.startswith("https://")


def test_missing_outputs_are_named(tmp_path, capsys) -> None:
    (tmp_path / "out.json").write_text(json.dumps({"workspaceName": "mlw"}))
    assert cli.main(["submit", "--outputs", str(tmp_path / "out.json"), "--prefix", "x"]) == cli.USAGE
    error = capsys.readouterr().err
    assert "computeName" in error and "hubBlobEndpoint" in error and "pulumi up" in error


# --- the HTTP boundary ------------------------------------------------------------------------------------


class RedirectingTransport(RecordingTransport):
    """The real requests transport, with Resource Manager's host replaced by the local endpoint."""

    def __init__(self, endpoint: ArmEndpoint) -> None:
        super().__init__(connection_verify=str(endpoint.ca_file))
        self.target = urlsplit(endpoint.url)

    def send(self, request: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url)
        request.url = urlunsplit((self.target.scheme, self.target.netloc, url.path, url.query, url.fragment))
        return super().send(request, **kwargs)


def models_path(outputs: stack_outputs.StackOutputs, name: str) -> str:
    return (
        f"/subscriptions/{outputs.azureSubscriptionId}/resourceGroups/{outputs.resourceGroupName}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{outputs.workspaceName}/models/{name}/versions"
    )


# --- package ------------------------------------------------------------------------------------------


def test_the_package_request_targets_an_online_server_on_our_base_environment() -> None:
    request = packaging.package_request("edge-model", "8", "azureml:edge-training-serving:3")
    rest = request._to_rest_object()
    assert rest["targetEnvironmentId"] == "edge-model-image"
    assert rest["inferencingServer"]["serverType"] == "AzureMLOnline"
    assert rest["inferencingServer"]["codeConfiguration"]["scoringScript"] == "score.py"
    assert rest["baseEnvironmentSource"] == {
        "baseEnvironmentSourceType": "EnvironmentAsset",
        "resourceId": "azureml:edge-training-serving:3",
    }
    assert rest["tags"] == {"model": "edge-model:8"}


def test_package_builds_an_image_of_the_model_at_the_http_boundary(outputs, arm) -> None:
    base = models_path(outputs, "x").removesuffix("/models/x/versions")
    serving = f"{base}/environments/edge-training-serving"
    image_env = f"{base}/environments/edge-model-image/versions/1"
    image = f"{outputs.registryLoginServer}/azureml/edge-model-image@sha256:{'a' * 64}"

    def code(version_id: str) -> dict[str, Any]:
        return {
            "id": version_id,
            "name": "1",
            "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
            "properties": {
                "codeUri": "https://st.blob.core.windows.net/code/serving",
                "isAnonymous": True,
                "isArchived": False,
                "properties": {},
                "tags": {},
            },
        }

    arm.fake.script("GET", serving, Reply(404, {"error": {"code": "NotFound", "message": "new"}}))
    arm.fake.script(
        "PUT",
        f"{serving}/versions/1",
        Reply(
            201,
            {
                "id": f"{serving}/versions/1",
                "name": "1",
                "properties": {
                    "image": jobs.BASE_IMAGE,
                    "isAnonymous": False,
                    "isArchived": False,
                    "properties": {},
                    "tags": {},
                    "osType": "Linux",
                },
            },
        ),
    )
    # The scoring code is already in the workspace (same content hash), so nothing is uploaded.
    arm.fake.script_matching(
        "GET",
        rf"{re.escape(base)}/codes/[^/]+/versions",
        Reply(200, {"value": [code(f"{base}/codes/serving/versions/1")]}),
    )
    arm.fake.script("GET", f"{base}/codes/serving/versions/1", Reply(200, code(f"{base}/codes/serving/versions/1")))
    arm.fake.script(
        "GET",
        base,
        Reply(
            200,
            {
                "id": base,
                "name": outputs.workspaceName,
                "location": "westeurope",
                "kind": "Default",
                "type": "Microsoft.MachineLearningServices/workspaces",
                "properties": {
                    "workspaceId": "00000000-0000-0000-0000-00000000000a",
                    "discoveryUrl": "https://westeurope.api.azureml.ms/discovery",
                },
            },
        ),
    )
    arm.fake.script(
        "POST",
        f"{base}/models/edge-model/versions/3/package",
        Reply(200, {"targetEnvironmentId": image_env, "buildState": "Succeeded", "buildId": "build-1"}),
    )
    arm.fake.script(
        "GET",
        image_env,
        Reply(
            200,
            {
                "id": image_env,
                "name": "1",
                "properties": {
                    "image": image,
                    "isAnonymous": False,
                    "isArchived": False,
                    "properties": {},
                    "tags": {},
                    "osType": "Linux",
                },
            },
        ),
    )

    client = ml_client(outputs, credential=StaticCredential(), transport=RedirectingTransport(arm))
    assert packaging.package(client, "edge-model", "3") == image

    put = next(r for r in arm.fake.requests if r.method == "PUT")
    assert put.body["properties"]["image"] == jobs.BASE_IMAGE
    assert "scikit-learn==1.9.1" in put.body["properties"]["condaFile"]
    post = next(r for r in arm.fake.requests if r.method == "POST")
    assert post.path == f"{base}/models/edge-model/versions/3/package"
    assert post.query["api-version"][0].startswith("20")
    assert post.body["targetEnvironmentId"].endswith("/environments/edge-model-image")
    assert post.body["inferencingServer"]["serverType"] == "AzureMLOnline"
    assert post.body["inferencingServer"]["codeConfiguration"]["scoringScript"] == "score.py"
    assert post.body["inferencingServer"]["codeConfiguration"]["codeId"].endswith("/codes/serving/versions/1")
    assert post.body["baseEnvironmentSource"]["baseEnvironmentSourceType"] == "EnvironmentAsset"
    assert post.body["baseEnvironmentSource"]["resourceId"].endswith("/environments/edge-training-serving/versions/1")
    assert post.body["tags"] == {"model": "edge-model:3"}
    assert not any(r.method == "PUT" and "/codes/" in r.path for r in arm.fake.requests)  # no code re-upload


# --- deploy over SSH ------------------------------------------------------------------------------------

DOCKER_SHIM = r"""STATE="{state}"
echo "docker $*" >> "$STATE/calls"
mkdir -p "$STATE/containers"
case "$1" in
  login) cat > "$STATE/stdin-password"; echo "Login Succeeded" ;;
  logout|pull) ;;
  ps) ls "$STATE/containers" ;;
  inspect)
    for last; do :; done
    case "$3" in
      *Running*) cat "$STATE/containers/$last/running" 2>/dev/null || echo false ;;
      *Health*)
        # An image without HEALTHCHECK: real docker fails the template with this message.
        if [ "$(cat "$STATE/health")" = none ]; then
          echo 'template parsing error: map has no entry for key "Health"' >&2; exit 1
        fi
        cat "$STATE/health" ;;
    esac ;;
  stop) echo false > "$STATE/containers/$2/running" ;;
  start) echo true > "$STATE/containers/$2/running" ;;
  rm) for last; do :; done; rm -rf "$STATE/containers/$last" ;;
  run)
    prev=""; name=""
    for arg; do [ "$prev" = "--name" ] && name=$arg; prev=$arg; done
    mkdir -p "$STATE/containers/$name"
    echo true > "$STATE/containers/$name/running"
    echo "$prev" > "$STATE/containers/$name/image"
    echo "$name" ;;
  logs) echo "ImportError: no module named sklearn" ;;
esac
"""


@pytest.fixture
def vm(ssh_server: services.SshServer, tmp_path: Path) -> Path:
    state = tmp_path / "docker-state"
    state.mkdir()
    (state / "health").write_text("healthy\n")
    services.write_shim(ssh_server.directory / "shims", "docker", DOCKER_SHIM.format(state=state))
    services.write_shim(
        ssh_server.directory / "shims",
        "curl",
        f'echo "curl $*" >> "{state}/calls"\n[ -f "{state}/serving" ] || exit 7\n',
    )
    return state


def target(server: services.SshServer, key: KeyPair) -> deploy.DeployTarget:
    return deploy.DeployTarget(
        services.LOOPBACK, server.user, key.private_pem, server.host_key_fingerprint, port=server.port
    )


def release(tag: str) -> deploy.Release:
    return deploy.Release(
        image=f"crdev.azurecr.io/edge-model:{tag}",
        registry="crdev.azurecr.io",
        token_name="edge-pull",
        token_password="token-password-123",
    )


def containers(state: Path) -> dict[str, tuple[str, str]]:
    root = state / "containers"
    return {c.name: ((c / "image").read_text().strip(), (c / "running").read_text().strip()) for c in root.iterdir()}


def test_deploy_pulls_with_a_token_on_stdin_runs_and_health_checks(ssh_server, ssh_user_key, vm) -> None:
    name = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    assert containers(vm) == {name: ("crdev.azurecr.io/edge-model:v1", "true")}
    calls = (vm / "calls").read_text().splitlines()
    verbs = [c.split()[1] for c in calls]
    assert verbs[verbs.index("login") :] == ["login", "pull", "logout", "rm", "run", "inspect"]
    assert "--password-stdin" in calls[verbs.index("login")]
    assert (vm / "stdin-password").read_text() == "token-password-123"
    assert all("token-password-123" not in c for c in calls)


def test_a_redeploy_replaces_the_old_container(ssh_server, ssh_user_key, vm) -> None:
    first = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    second = deploy.deploy(target(ssh_server, ssh_user_key), release("v2"))
    assert first != second
    assert containers(vm) == {second: ("crdev.azurecr.io/edge-model:v2", "true")}
    assert deploy.deploy(target(ssh_server, ssh_user_key), release("v2")) == second  # the same again: no-op
    assert (vm / "calls").read_text().count("docker pull") == 2


def test_a_failed_health_check_keeps_the_old_container_and_reports(ssh_server, ssh_user_key, vm) -> None:
    old = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    (vm / "health").write_text("unhealthy\n")
    with pytest.raises(deploy.DeployError) as caught:
        deploy.deploy(target(ssh_server, ssh_user_key), release("v2"))
    assert "did not become healthy" in str(caught.value) and "ImportError" in str(caught.value)
    assert containers(vm) == {old: ("crdev.azurecr.io/edge-model:v1", "true")}


def test_a_health_check_that_never_settles_times_out(ssh_server, ssh_user_key, vm) -> None:
    (vm / "health").write_text("starting\n")
    clock = FakeClock()
    with pytest.raises(deploy.DeployError, match="within 30s"):
        deploy.deploy(target(ssh_server, ssh_user_key), release("v1"), 30, clock=clock, sleep=clock.sleep)
    assert clock.now == 30 - LAST_LOOK_S  # the last look just before the deadline (clients/deadline.py)


def test_an_image_without_healthcheck_is_probed_over_http(ssh_server, ssh_user_key, vm) -> None:
    (vm / "health").write_text("none\n")
    (vm / "serving").touch()
    name = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    assert containers(vm) == {name: ("crdev.azurecr.io/edge-model:v1", "true")}
    assert "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/" in (vm / "calls").read_text()


def test_an_image_without_healthcheck_that_never_answers_is_rolled_back(ssh_server, ssh_user_key, vm) -> None:
    (vm / "serving").touch()
    old = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    (vm / "health").write_text("none\n")
    (vm / "serving").unlink()
    clock = FakeClock()
    with pytest.raises(deploy.DeployError, match=re.escape("no answer on http://127.0.0.1:8080/")):
        deploy.deploy(target(ssh_server, ssh_user_key), release("v2"), 30, clock=clock, sleep=clock.sleep)
    assert containers(vm) == {old: ("crdev.azurecr.io/edge-model:v1", "true")}


def test_deploy_refuses_an_unexpected_host_key(ssh_server, ssh_user_key, vm) -> None:
    wrong = deploy.DeployTarget(
        services.LOOPBACK, ssh_server.user, ssh_user_key.private_pem, "SHA256:" + "Z" * 43, port=ssh_server.port
    )
    with pytest.raises(deploy.DeployError, match="not the recorded"):
        deploy.deploy(wrong, release("v1"))
    assert not (vm / "calls").exists()
