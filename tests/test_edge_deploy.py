"""`deploy --target edge` by mode: Kubernetes manifests validated offline and applied over real SSH
to a recording kubectl; the virtual-machine health judgment; the pull password generated through
the real azure-mgmt-containerregistry client against the HTTPS stand-in."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
from azure.mgmt.containerregistry.v2025_03_01_preview import models as acr

from edge import serving_manifests
from tests.harness import services
from tests.harness.arm_models import check_body
from tests.harness.arm_server import Reply, StaticCredential
from tests.harness.clock import FakeClock
from tests.test_training_cli import containers, release, target, vm  # noqa: F401 (fixture)
from training import deploy, image_build

IMAGE = "crdev.azurecr.io/edge-model@sha256:" + "a" * 64
PASSWORD = "generated-pull-password-42"


def serving(**changes: object) -> serving_manifests.ServingRelease:
    values = {"app": "edge-model", "image": IMAGE, "registry": "crdev.azurecr.io", "token_name": "edge-pull",
              "token_password": PASSWORD, "model": "edge-model:7"}  # fmt: skip
    values.update(changes)
    return serving_manifests.ServingRelease(**values)  # type: ignore[arg-type]


# --- manifests, offline ------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", serving_manifests.manifests(serving()), ids=lambda m: m["kind"])
def test_each_manifest_is_valid_for_the_clusters_version_strictly(manifest) -> None:
    assert kubernetes_validate.validate(manifest, f"{serving_manifests.K3S_MINOR}.0", strict=True)


def test_strict_validation_refuses_a_misspelt_field() -> None:
    broken = copy.deepcopy(serving_manifests.deployment(serving()))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, f"{serving_manifests.K3S_MINOR}.0", strict=True)


def test_the_pod_pulls_with_the_token_and_probes_the_servers_real_route() -> None:
    pod = serving_manifests.deployment(serving())["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert pod["imagePullSecrets"] == [{"name": "edge-model-pull"}]
    assert container["ports"] == [{"name": "http", "containerPort": 5001, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    strategy = serving_manifests.deployment(serving())["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # the old pod serves until the new one is ready


def test_the_pull_secret_holds_the_token_for_our_registry() -> None:
    secret = serving_manifests.pull_secret(serving())
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = config["auths"]["crdev.azurecr.io"]
    assert (entry["username"], entry["password"]) == ("edge-pull", PASSWORD)
    assert base64.b64decode(entry["auth"]).decode() == f"edge-pull:{PASSWORD}"
    assert PASSWORD not in repr(serving())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"app": "Edge_Model"}, "app 'Edge_Model' is not a Kubernetes name"),
        ({"namespace": "-x"}, "namespace '-x' is not a Kubernetes name"),
        ({"node_port": 8080}, "outside the NodePort range"),
        ({"image": "crdev.azurecr.io/edge-model:7"}, "must be pinned by digest"),
    ],
)
def test_bad_release_values_are_refused_with_their_name(changes, message) -> None:
    with pytest.raises(serving_manifests.ManifestError, match=message):
        serving(**changes)


# --- kubernetes mode over SSH --------------------------------------------------------------------------

KUBECTL_SHIM = r"""STATE="{state}"
echo "kubectl $*" >> "$STATE/calls"
case "$1 $2" in
  "get deployment/edge-model") [ -f "$STATE/existing" ] ;;
  "apply -f") cat > "$STATE/applied.json"; echo "deployment.apps/edge-model configured" ;;
  "rollout status") [ "$(cat "$STATE/rollout")" = ready ] || {{ echo "error: timed out waiting" >&2; exit 1; }} ;;
  "rollout undo") echo "deployment.apps/edge-model rolled back" ;;
  "logs deployment/edge-model") echo "ModuleNotFoundError: No module named 'joblib'" ;;
  "delete "*) echo "deleted" ;;
esac
"""


@pytest.fixture
def cluster(ssh_server: services.SshServer, tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "k3s"
    state.mkdir()
    (state / "rollout").write_text("ready\n")
    services.write_shim(ssh_server.directory / "shims", "kubectl", KUBECTL_SHIM.format(state=state))
    yield state


def kubectl_calls(state: Path) -> list[str]:
    return (state / "calls").read_text().splitlines()


def test_kubernetes_mode_applies_the_manifests_from_stdin_and_waits_for_the_rollout(
    ssh_server, ssh_user_key, cluster
) -> None:
    assert deploy.deploy_kubernetes(target(ssh_server, ssh_user_key), serving(), rollout_seconds=120) == "edge-model"
    applied = json.loads((cluster / "applied.json").read_text())
    assert applied["items"] == serving_manifests.manifests(serving())
    calls = kubectl_calls(cluster)
    assert calls == [
        "kubectl get deployment/edge-model --namespace default",
        "kubectl apply -f -",
        "kubectl rollout status deployment/edge-model --namespace default --timeout=120s",
    ]
    assert all(PASSWORD not in c for c in calls)


def test_a_rollout_that_never_gets_ready_is_undone(ssh_server, ssh_user_key, cluster) -> None:
    (cluster / "existing").touch()
    (cluster / "rollout").write_text("stuck\n")
    with pytest.raises(deploy.DeployError) as caught:
        deploy.deploy_kubernetes(target(ssh_server, ssh_user_key), serving(), rollout_seconds=60)
    assert "did not become ready within 60s; rolled back to the previous revision" in str(caught.value)
    assert "No module named 'joblib'" in str(caught.value)
    assert "kubectl rollout undo deployment/edge-model --namespace default" in kubectl_calls(cluster)


def test_a_first_rollout_that_fails_leaves_nothing_behind(ssh_server, ssh_user_key, cluster) -> None:
    (cluster / "rollout").write_text("stuck\n")
    with pytest.raises(deploy.DeployError, match="removed it"):
        deploy.deploy_kubernetes(target(ssh_server, ssh_user_key), serving(), rollout_seconds=60)
    calls = kubectl_calls(cluster)
    assert not any("rollout undo" in c for c in calls)
    assert calls[-1] == (
        "kubectl delete deployment/edge-model,service/edge-model,secret/edge-model-pull "
        "--namespace default --ignore-not-found"
    )


@pytest.mark.parametrize(
    ("values", "mode"),
    [({}, "virtual-machine"), ({"edgeComputeMode": None}, "virtual-machine"),
     ({"edgeComputeMode": "kubernetes"}, "kubernetes"), ({"edgeComputeMode": "virtual-machine"}, "virtual-machine")],
)  # fmt: skip
def test_the_edge_mode_comes_from_the_stack(values, mode) -> None:
    assert deploy.edge_mode(values) == mode


def test_an_unknown_edge_mode_is_refused() -> None:
    with pytest.raises(deploy.DeployError, match="edgeComputeMode is 'k8s'"):
        deploy.edge_mode({"edgeComputeMode": "k8s"})


# --- virtual-machine mode: no health status is not healthy -----------------------------------------------


@pytest.mark.parametrize("status", ["<no value>", ""])
def test_an_image_without_a_health_status_is_judged_by_its_liveness_route(ssh_server, ssh_user_key, vm, status) -> None:  # noqa: F811
    (vm / "serving").touch()
    old = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    (vm / "health").write_text(f"{status}\n")
    (vm / "serving").unlink()
    clock = FakeClock()
    with pytest.raises(deploy.DeployError, match=re.escape("no answer on http://127.0.0.1:8080/")):
        deploy.deploy(target(ssh_server, ssh_user_key), release("v2"), 30, clock=clock, sleep=clock.sleep)
    assert containers(vm) == {old: ("crdev.azurecr.io/edge-model:v1", "true")}
    (vm / "serving").touch()
    new = deploy.deploy(target(ssh_server, ssh_user_key), release("v2"), 30, clock=clock, sleep=clock.sleep)
    assert containers(vm) == {new: ("crdev.azurecr.io/edge-model:v2", "true")}


# --- the pull password -----------------------------------------------------------------------------------

SUB, RG, REGISTRY = "00000000-0000-0000-0000-000000000001", "rg-edge", "crdev"
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
TOKEN_ID = f"{BASE}/tokens/edge-pull"


def test_a_pull_password_is_generated_on_request_for_the_token(arm) -> None:
    passwords = [{"name": "password2", "value": PASSWORD, "expiry": "2026-11-25T16:00:00Z"}]
    answer = {"username": "edge-pull", "passwords": passwords}
    arm.fake.script("POST", f"{BASE}/generateCredentials", Reply(200, answer))
    client = image_build.registry_client(SUB, StaticCredential(), base_url=arm.url, transport=arm.transport())
    assert deploy.generate_pull_password(client, RG, REGISTRY, TOKEN_ID) == PASSWORD
    [request] = arm.fake.requests
    assert request.query["api-version"] == ["2025-03-01-preview"]
    assert check_body(acr.GenerateCredentialsParameters, request.body) == []
    assert request.body["tokenId"] == TOKEN_ID and request.body["name"] == "password2"
    assert request.body["expiry"]  # short-lived, never without an end


def test_no_generated_password_is_an_error_without_secrets(arm) -> None:
    arm.fake.script("POST", f"{BASE}/generateCredentials", Reply(200, {"username": "edge-pull", "passwords": []}))
    client = image_build.registry_client(SUB, StaticCredential(), base_url=arm.url, transport=arm.transport())
    with pytest.raises(deploy.DeployError, match="generated no password2 for token edge-pull"):
        deploy.generate_pull_password(client, RG, REGISTRY, TOKEN_ID)


# --- the CLI ---------------------------------------------------------------------------------------------


def cli_outputs(tmp_path: Path, **extra: str) -> Path:
    from tests.test_image_build import stack_outputs

    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({**stack_outputs(), **extra}))
    return path


@pytest.mark.parametrize(
    ("argv", "extra", "message"),
    [
        ([], {}, "--target edge needs --image"),
        (["--image", IMAGE, "--ssh-key", "k"], {}, "no pull token: pass --token-name"),
        (["--image", IMAGE, "--ssh-key", "k", "--token-name", "t"], {}, "no pull password"),
        (["--image", IMAGE, "--ssh-key", "k"], {"registryPullTokenName": "edge-pull"}, "no pull password"),
    ],
)
def test_deploy_edge_names_what_is_missing(tmp_path, capsys, argv, extra, message) -> None:
    from training import cli

    outputs = cli_outputs(tmp_path, **extra)
    assert cli.main(["deploy", "--target", "edge", "--outputs", str(outputs), *argv]) == cli.USAGE
    assert message in capsys.readouterr().err


def test_deploy_cloud_needs_the_model_and_version(tmp_path, capsys) -> None:
    from training import cli

    assert cli.main(["deploy", "--target", "cloud", "--outputs", str(cli_outputs(tmp_path))]) == cli.USAGE
    assert "--target cloud needs --model and --version" in capsys.readouterr().err


# --- the Hub's CA for the model server (hubCaCertificates) -----------------------------------------------

HUB_CA = "-----BEGIN CERTIFICATE-----\nMIIBfake+Contoso+Hub+Root\n-----END CERTIFICATE-----\n"


def pod_of(manifests: list[dict[str, object]]) -> dict[str, object]:
    [deployment] = [m for m in manifests if m["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]  # type: ignore[index]


@pytest.mark.parametrize("manifest", serving_manifests.manifests(serving(hub_ca=HUB_CA)), ids=lambda m: m["kind"])
def test_with_a_hub_ca_each_manifest_is_still_valid_strictly(manifest) -> None:
    assert kubernetes_validate.validate(manifest, f"{serving_manifests.K3S_MINOR}.0", strict=True)


def test_with_a_hub_ca_the_pod_mounts_it_read_only_from_a_config_map_and_names_it() -> None:
    items = serving_manifests.manifests(serving(hub_ca=HUB_CA))
    assert [m["kind"] for m in items] == ["Secret", "ConfigMap", "Deployment", "Service"]  # the map before the pod
    config_map = items[1]
    assert config_map["metadata"]["name"] == "edge-model-hub-ca"
    assert config_map["data"] == {"hub-ca.pem": HUB_CA}
    pod = pod_of(items)
    [container] = pod["containers"]
    assert {"name": "EDGE_HUB_CA_FILE", "value": "/etc/edge-training/hub-ca.pem"} in container["env"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["hub-ca"] == {"name": "hub-ca", "mountPath": "/etc/edge-training", "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hub-ca"]["configMap"]["name"] == "edge-model-hub-ca"
    assert volumes["hub-ca"]["configMap"]["items"] == [{"key": "hub-ca.pem", "path": "hub-ca.pem"}]
    assert "hostPath" not in json.dumps(pod)


def test_a_new_hub_ca_rolls_the_pods() -> None:
    def template(ca: str) -> dict[str, object]:
        return serving_manifests.deployment(serving(hub_ca=ca))["spec"]["template"]

    assert template(HUB_CA) == template(HUB_CA)
    assert template(HUB_CA) != template(HUB_CA.replace("fake", "next"))


@pytest.mark.parametrize("ca", ["", "  \n"])
def test_without_a_hub_ca_the_manifests_carry_nothing_of_it(ca: str) -> None:
    items = serving_manifests.manifests(serving(hub_ca=ca))
    assert items == serving_manifests.manifests(serving())
    assert [m["kind"] for m in items] == ["Secret", "Deployment", "Service"]
    pod = pod_of(items)
    assert "env" not in pod["containers"][0]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert (
        "hub-ca" not in json.dumps(items)
        and "annotations" not in serving_manifests.deployment(serving())["spec"]["template"]["metadata"]
    )


@pytest.mark.parametrize(
    ("ca", "message"),
    [
        ("not a certificate", "holds no PEM certificate"),
        (HUB_CA + "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n", "holds a private key"),
    ],
)
def test_a_hub_ca_that_is_no_certificate_is_refused(ca: str, message: str) -> None:
    with pytest.raises(serving_manifests.ManifestError, match=message):
        serving(hub_ca=ca)


def test_kubernetes_mode_applies_the_ca_and_a_failed_first_rollout_removes_it(
    ssh_server, ssh_user_key, cluster
) -> None:
    (cluster / "rollout").write_text("stuck\n")
    with pytest.raises(deploy.DeployError, match="removed it"):
        deploy.deploy_kubernetes(target(ssh_server, ssh_user_key), serving(hub_ca=HUB_CA), rollout_seconds=60)
    applied = json.loads((cluster / "applied.json").read_text())
    assert applied["items"] == serving_manifests.manifests(serving(hub_ca=HUB_CA))
    assert kubectl_calls(cluster)[-1] == (
        "kubectl delete deployment/edge-model,service/edge-model,secret/edge-model-pull,configmap/edge-model-hub-ca "
        "--namespace default --ignore-not-found"
    )


def docker_run(state: Path) -> list[str]:
    [run] = [c for c in (state / "calls").read_text().splitlines() if c.startswith("docker run ")]
    return run.split()


def test_virtual_machine_mode_mounts_the_vms_ca_read_only_and_names_it(ssh_server, ssh_user_key, tmp_path, vm) -> None:  # noqa: F811
    on_vm = tmp_path / "hub-ca.pem"  # first boot's /etc/edge-training/hub-ca.pem, on the loopback "VM"
    on_vm.write_text(HUB_CA)
    with_ca = dataclasses.replace(release("v1"), hub_ca_file=str(on_vm))
    deploy.deploy(target(ssh_server, ssh_user_key), with_ca)
    argv = docker_run(vm)
    assert argv[-1] == "crdev.azurecr.io/edge-model:v1"  # options before the image, not passed to its command
    assert argv[argv.index("-v") + 1] == f"{on_vm}:/etc/edge-training/hub-ca.pem:ro"
    assert argv[argv.index("-e") + 1] == "EDGE_HUB_CA_FILE=/etc/edge-training/hub-ca.pem"


def test_virtual_machine_mode_without_a_ca_mounts_nothing(ssh_server, ssh_user_key, vm) -> None:  # noqa: F811
    deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    argv = docker_run(vm)
    assert "-v" not in argv and "-e" not in argv and "EDGE_HUB_CA_FILE" not in " ".join(argv)


def test_a_ca_missing_on_the_vm_is_named_and_the_old_container_kept(ssh_server, ssh_user_key, tmp_path, vm) -> None:  # noqa: F811
    old = deploy.deploy(target(ssh_server, ssh_user_key), release("v1"))
    missing = tmp_path / "no-such" / "hub-ca.pem"
    with pytest.raises(deploy.DeployError, match=f"the VM has no {re.escape(str(missing))}"):
        deploy.deploy(target(ssh_server, ssh_user_key), dataclasses.replace(release("v2"), hub_ca_file=str(missing)))
    assert containers(vm) == {old: ("crdev.azurecr.io/edge-model:v1", "true")}
    assert not missing.parent.exists()  # docker never got the chance to make it a directory


@pytest.mark.parametrize("mode", ["kubernetes", "virtual-machine"])
@pytest.mark.parametrize("ca", [HUB_CA, ""])
def test_deploy_edge_hands_the_stacks_ca_to_either_mode(tmp_path, monkeypatch, capsys, mode, ca) -> None:
    """The CLI's part: the stack output reaches the release; the deploys themselves run over SSH above."""
    from training import cli

    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "EDGE_HUB_CA_FILE"):
        monkeypatch.setenv(name, "recorded")  # restored after the test: the CLI sets them for itself
        monkeypatch.delenv(name)
    handed: list[object] = []
    monkeypatch.setattr(deploy, "deploy_kubernetes", lambda where, release: handed.append(release) or "edge-model")
    monkeypatch.setattr(deploy, "deploy", lambda where, release: handed.append(release) or "edge-model-1")
    key, password = tmp_path / "id", tmp_path / "pw"
    key.write_text("key")
    password.write_text(PASSWORD)
    outputs = cli_outputs(tmp_path, edgeComputeMode=mode, hubCaCertificates=ca)
    files = ["--ssh-key", str(key), "--token-name", "edge-pull", "--token-password-file", str(password)]
    argv = ["deploy", "--target", "edge", "--outputs", str(outputs), "--image", IMAGE, *files]
    assert cli.main(argv) == cli.OK, capsys.readouterr().err
    [release] = handed
    if mode == "kubernetes":
        assert isinstance(release, serving_manifests.ServingRelease) and release.hub_ca == ca
    else:
        assert isinstance(release, deploy.Release)
        assert release.hub_ca_file == ("/etc/edge-training/hub-ca.pem" if ca else "")
