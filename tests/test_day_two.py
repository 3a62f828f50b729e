"""Day two under mocks: what a change of version, policy or rotation does to the declared resources,
judged by the providers' own diffs (providers/hub_arm_resource.py, providers/cluster_secrets.py)
on the inputs of two program runs, as `pulumi up` would see them; and the destroy order from the
program's dependency graph."""

from __future__ import annotations

import base64
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.hybridkubernetes import models as arc_models
from azure.mgmt.kubernetesconfiguration.v2023_05_01 import models as extension_models

from components import edge_kubernetes
from edge import first_boot, k3s_releases
from providers.arc_connection import ArcConnectionProvider
from providers.cluster_secrets import ClusterSecretsProvider, new_onboarding_key, public_key_certificate
from providers.hub_arm_resource import HubArmResourceProvider
from tests.conftest import DEV_SECRET_KEYS, dev_stack_config
from tests.harness import pulumi_mocks
from tests.harness.arm_models import check_body, rest_field_problems
from tests.harness.pulumi_mocks import Recording
from tests.test_edge_kubernetes import (
    COMPUTE,
    EXTENSION,
    SECRETS,
    WAIT,
    cluster_of,
    depends,
    extension_body,
    extension_script,
    script_extension,
    vms,
)

NEXT = "v1.36.3+k3s1"
AGENTS = {"hubAgentCount": 2}


def run(overrides: dict[str, Any] | None = None) -> Recording:
    return pulumi_mocks.run_program(dev_stack_config(AGENTS | (overrides or {})), secret_keys=DEV_SECRET_KEYS)


def by_name(recording: Recording) -> dict[str, pulumi_mocks.Resource]:
    return {r.name: r for r in recording.resources}


def changed(before: Recording, after: Recording) -> set[str]:
    old, new = by_name(before), by_name(after)
    assert old.keys() == new.keys(), "a day-two change must not add or remove resources"
    return {name for name in old if old[name].inputs != new[name].inputs}


@pytest.fixture
def next_release(monkeypatch: pytest.MonkeyPatch) -> k3s_releases.K3sRelease:
    release = k3s_releases.K3sRelease(NEXT, "a" * 64, "b" * 64)
    monkeypatch.setattr(k3s_releases, "RELEASES", {**k3s_releases.RELEASES, NEXT: release})
    return release


@pytest.fixture(scope="module")
def before() -> Recording:
    return run()


# --- upgrade -----------------------------------------------------------------------------------


def test_changing_k3s_version_updates_each_nodes_script_and_replaces_nothing(
    before: Recording, next_release: k3s_releases.K3sRelease
) -> None:
    after = run({"k3sVersion": NEXT})
    names = changed(before, after)
    # The three nodes' CustomScript extensions, and the version the refresh compares against: no
    # VM, no cluster, no Azure ML extension.
    scripts = {"hub-vm-first-boot", "hub-agent-1-first-boot", "hub-agent-2-first-boot"}
    assert names == scripts | {"edge-kubernetes-connected"}
    old, new = by_name(before), by_name(after)
    wait = ArcConnectionProvider().diff(
        "id", old["edge-kubernetes-connected"].inputs, new["edge-kubernetes-connected"].inputs
    )
    assert wait.changes and wait.replaces == []
    for name in scripts:
        diff = HubArmResourceProvider().diff("id", old[name].inputs, new[name].inputs)
        assert diff.changes and diff.replaces == [], name
        script = extension_script(new[name])
        assert f'K3S_VERSION="{NEXT}"' in script and f'K3S_SHA256="{next_release.sha256}"' in script
    for vm in vms(after):
        assert not HubArmResourceProvider().diff("id", old[vm.name].inputs, vm.inputs).changes
        # And a stack whose VMs still carry the K3s script of before day two in their custom data
        # keeps it: the engine ignores that input, so moving the script replaces no VM.
        assert vm.ignore_changes == ["secretProperties"], vm.name


def test_an_unsupported_or_unrecorded_k3s_version_is_refused_before_anything_is_declared() -> None:
    from components.config import ConfigError

    for version, message in (
        ("v1.33.9+k3s1", "the Azure ML extension supports 1.34 to 1.36"),
        ("v1.36.9+k3s1", "no checksums recorded for v1.36.9+k3s1"),
        ("1.36.2", "is not a K3s release tag vX.Y.Z+k3sN"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            run({"k3sVersion": version})


def test_the_k3s_window_is_the_extensions_n_minus_two() -> None:
    window = k3s_releases.AZUREML_EXTENSION_WINDOW
    assert len(window.minors()) == 3 and window.minors()[-1] == window.newest
    assert all(k3s_releases.problem_with(v) is None for v in k3s_releases.RELEASES)


# --- rotation ------------------------------------------------------------------------------------


def test_a_new_serialized_provider_or_unrelated_input_never_rotates_anything() -> None:
    provider = ClusterSecretsProvider()
    outs = provider.create({"keyBits": 2048, "onboardingKeyRotation": 0})
    olds = {**outs.outs, "__provider": base64.b64encode(pickle.dumps(provider)).decode()}
    news = {"keyBits": 2048, "onboardingKeyRotation": 0, "__provider": "a-new-pickle-of-changed-code"}
    assert provider.diff("id", olds, news).changes is False
    # State written before the counter existed holds `rotation: 0` and no counter: not a rotation.
    legacy = {k: v for k, v in olds.items() if k != "onboardingKeyRotation"} | {"rotation": 0}
    assert provider.diff("id", legacy, news).changes is False


def test_rotating_the_onboarding_key_renews_only_the_key_in_place() -> None:
    provider = ClusterSecretsProvider()
    olds = provider.create({"keyBits": 2048, "onboardingKeyRotation": 0}).outs
    news = {"keyBits": 2048, "onboardingKeyRotation": 1}
    diff = provider.diff("id", olds, news)
    assert diff.changes and diff.replaces == []  # same resource: nothing depending on its id moves
    outs = provider.update("id", olds, news).outs
    assert outs["onboardingPrivateKey"] != olds["onboardingPrivateKey"]
    assert outs["agentPublicKeyCertificate"] == public_key_certificate(outs["onboardingPrivateKey"])
    assert outs["joinToken"] == olds["joinToken"]
    assert outs["onboardingKeyRotation"] == 1
    # The join token's counter (k3sJoinTokenRotation) renews only the token.
    token_news = {**news, "joinTokenRotation": 1}
    assert provider.diff("id", outs, token_news).replaces == []
    renewed = provider.update("id", outs, token_news).outs
    assert renewed["joinToken"] != outs["joinToken"]
    assert renewed["onboardingPrivateKey"] == outs["onboardingPrivateKey"]


def test_rotation_changes_the_cluster_in_place_and_the_servers_script_only(
    before: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = dict(pulumi_mocks._SECRETS_CACHE)
    key = new_onboarding_key(2048)  # smaller than the real one: only its difference matters here
    monkeypatch.setattr(pulumi_mocks, "_SECRETS_CACHE", {})
    pulumi_mocks.preset_cluster_secrets(
        {**made, "onboardingPrivateKey": key, "agentPublicKeyCertificate": public_key_certificate(key)}
    )
    after = run({"arcOnboardingKeyRotation": 1})
    names = changed(before, after)
    assert names == {"edge-kubernetes-secrets", "edge-kubernetes-cluster", "hub-vm-first-boot"}
    old, new = cluster_of(before), cluster_of(after)
    identity = ("resourceName", "resourceGroupName", "resourceProviderNamespace", "resourceType", "apiVersion")
    assert {k: old.inputs[k] for k in identity} == {k: new.inputs[k] for k in identity}
    assert new.inputs["properties"]["agentPublicKeyCertificate"] == public_key_certificate(key)
    assert key.splitlines()[1] in extension_script(script_extension(after))
    # The agents never had the key; their VMs and scripts are untouched.
    assert "PRIVATE KEY" not in extension_script(script_extension(after, "vm-agent1-edge-dev"))



def test_rotating_the_join_token_changes_the_secrets_and_every_nodes_script_and_replaces_nothing(
    before: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = dict(pulumi_mocks._SECRETS_CACHE)
    token = "5f" * 32
    assert made["joinToken"] != token
    monkeypatch.setattr(pulumi_mocks, "_SECRETS_CACHE", {})
    pulumi_mocks.preset_cluster_secrets({**made, "joinToken": token})
    after = run({"k3sJoinTokenRotation": 1})
    names = changed(before, after)
    # The connected cluster, the VMs and the Azure ML side keep their inputs: only the token's
    # owner and the extensions that carry it to the nodes change.
    agent_extensions = {script_extension(after, f"vm-agent{i}-edge-dev").name for i in (1, 2)}
    assert names == {"edge-kubernetes-secrets", "hub-vm-first-boot", *agent_extensions}
    assert by_name(after)["edge-kubernetes-secrets"].inputs["joinTokenRotation"] == 1
    assert by_name(after)["edge-kubernetes-secrets"].inputs["onboardingKeyRotation"] == 0
    for vm in (None, "vm-agent1-edge-dev", "vm-agent2-edge-dev"):
        script = extension_script(script_extension(after, vm or "vm-edge-dev"))
        assert f"token: {token}" in script and made["joinToken"] not in script



@pytest.mark.parametrize(("value", "problem"), [(-1, "must be between 0 and"), ("one", "must be a whole number")])
def test_the_join_token_counter_is_validated(value: object, problem: str) -> None:
    from components.config import ConfigError, parse

    with pytest.raises(ConfigError, match=f"k3sJoinTokenRotation: {problem}"):
        parse(dev_stack_config(AGENTS | {"k3sJoinTokenRotation": value}), stack="dev", secret_keys=DEV_SECRET_KEYS)


# --- version policies ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pinned() -> Recording:
    """Every version pinned on purpose, and one agent fewer: one program run for all of it."""
    return run(
        {"arcAgentAutoUpgrade": False, "arcAgentVersion": "1.32.1", "azuremlExtensionVersion": "1.1.64"}
        | {"hubAgentCount": 1}
    )


def test_arc_agents_auto_upgrade_by_default_and_pin_only_on_purpose(before: Recording, pinned: Recording) -> None:
    assert cluster_of(before).inputs["properties"]["arcAgentProfile"] == {"agentAutoUpgrade": "Enabled"}
    assert 'ARC_AUTO_UPGRADE="true"' in extension_script(script_extension(before))
    body = cluster_of(pinned).inputs["properties"]
    assert body["arcAgentProfile"] == {"agentAutoUpgrade": "Disabled", "desiredAgentVersion": "1.32.1"}
    nested = {arc_models.ArcAgentProfile: {}}
    assert rest_field_problems(body["arcAgentProfile"], arc_models.ArcAgentProfile, nested) == []
    script = extension_script(script_extension(pinned))
    assert 'ARC_CHART_VERSION="1.32.1"' in script and 'ARC_AUTO_UPGRADE="false"' in script
    assert '"azureArcAgents": {"autoUpdate": false}' in script
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="arcAgentVersion: pins the Arc agents, which only holds with"):
        run({"arcAgentVersion": "1.32.1"})


def test_the_extension_follows_minor_versions_unless_pinned(before: Recording, pinned: Recording) -> None:
    following = extension_body(before.one(EXTENSION))["properties"]
    assert following["autoUpgradeMinorVersion"] is True and "version" not in following
    body = extension_body(pinned.one(EXTENSION))
    assert check_body(extension_models.Extension, body) == []
    assert body["properties"]["autoUpgradeMinorVersion"] is False and body["properties"]["version"] == "1.1.64"


# --- scale down and tear down ------------------------------------------------------------------------


def test_the_server_knows_the_agents_the_stack_declares(before: Recording) -> None:
    names = sorted(v.inputs["properties"]["osProfile"]["computerName"] for v in vms(before))
    agents = [n for n in names if n != "vm-edge-dev"]
    assert tuple(agents) == edge_kubernetes.agent_node_names("dev", 2)
    assert f'K3S_AGENT_NODES="{" ".join(agents)}"' in extension_script(script_extension(before))


def test_one_agent_fewer_tells_the_server_which_node_to_remove(pinned: Recording) -> None:
    assert 'K3S_AGENT_NODES="vm-agent1-edge-dev"' in extension_script(script_extension(pinned))


def test_destroy_order_compute_extension_nodes_cluster(before: Recording) -> None:
    """Pulumi deletes a resource before those it depends on, so each `depends` below is a
    destroy order: the compute, then the Azure ML extension, then the VMs (whose Arc agents go
    with them) and their scripts, then the connected cluster; the Hub network last."""
    compute, extension, cluster, wait = (
        before.one(COMPUTE),
        before.one(EXTENSION),
        cluster_of(before),
        before.one(WAIT),
    )
    assert depends(before, compute, extension)
    assert depends(before, extension, wait)
    for vm in vms(before):
        assert depends(before, wait, vm), vm.name
        assert depends(before, vm, cluster), f"{vm.name} must be deleted before the connected cluster"
        assert depends(before, script_extension(before, vm.inputs["resourceName"]), vm)
    assert depends(before, cluster, before.one(SECRETS))


def test_first_boot_and_the_upgrade_share_one_script_file_and_its_waits_fit_the_extension() -> None:
    script = first_boot.render_script("azureuser", "27.5.1")
    assert "upgrade_server_node()" in script and not re.findall(r"@[A-Z0-9_]+@", script)
    assert first_boot.UPGRADE_TURN_SECONDS < 90 * 60


# --- the page that documents it --------------------------------------------------------------------

DAY_TWO = Path(__file__).resolve().parent.parent / "docs" / "operate" / "day-two.md"


def _blocks(text: str) -> list[list[str]]:
    return [
        [line.strip() for line in block.strip().splitlines()]
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    ]


def test_the_day_two_pages_commands_are_valid_config_for_this_stack(
    next_release: k3s_releases.K3sRelease,
) -> None:
    """Each block of docs/operate/day-two.md: its `pulumi config set`s, applied to the example stack
    (the upgrade's version recorded as the fixture does), are valid config, then one pulumi verb."""
    from components.config import parse

    text = DAY_TWO.read_text()
    blocks = _blocks(text)
    assert len(blocks) >= 7
    verbs = set()
    for block in blocks:
        *sets, verb = block
        assert verb in ("pulumi up", "pulumi destroy", "pulumi refresh"), block
        verbs.add(verb)
        overrides: dict[str, Any] = {}
        for line in sets:
            parts = line.split()
            assert parts[:3] == ["pulumi", "config", "set"] and len(parts) == 5, line
            overrides[parts[3]] = parts[4]
        config = parse(dev_stack_config(AGENTS | overrides), stack="dev", secret_keys=DEV_SECRET_KEYS)
        assert config.day_two is not None
        if "k3sVersion" in overrides:
            assert config.day_two.k3s == next_release
        if "arcOnboardingKeyRotation" in overrides:
            assert config.day_two.onboarding_key_rotation == 1
        if "k3sJoinTokenRotation" in overrides:
            assert config.day_two.join_token_rotation == 1
    assert verbs == {"pulumi up", "pulumi destroy", "pulumi refresh"}
    window = k3s_releases.AZUREML_EXTENSION_WINDOW
    text = " ".join(text.split())
    assert f"{window.oldest} to {window.newest} as of {window.as_of}" in text
    assert f"within {first_boot.UPGRADE_DRAIN_SECONDS}s" in text
    assert f"at most {first_boot.UPGRADE_TURN_SECONDS // 60} minutes" in text
    for path in re.findall(r"`((?:edge|providers|components)/[\w/]+\.\w+)`", text):
        assert (DAY_TWO.parent.parent.parent / path).exists(), path
