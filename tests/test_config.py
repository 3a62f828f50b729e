"""Stack configuration: every bad input is refused with its key named, all at once."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from components import config as stack_config
from components import naming
from tests.conftest import DEV_SECRET_KEYS, ROOT, dev_stack_config, recorded_stack
from tests.harness import pulumi_mocks
from tests.harness.keys import ed25519_key, rsa_key


def parse(overrides: dict[str, Any] | None = None, secret_keys: tuple[str, ...] = DEV_SECRET_KEYS, stack: str = "dev"):
    return stack_config.parse(dev_stack_config(overrides), stack=stack, organization="acme", secret_keys=secret_keys)


def problems_for(overrides: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(stack_config.ConfigError) as caught:
        parse(overrides, **kwargs)
    return {p.key: p.reason for p in caught.value.problems}


def test_the_example_stack_is_valid_once_its_key_is_set() -> None:
    cfg = parse()
    assert cfg.azure.location == "westeurope"
    assert cfg.hub.metadata_host == "management.local.azurestack.external"
    assert cfg.hub.ssh_source_cidrs == ("203.0.113.0/24",)
    assert cfg.hub.allow_ssh_from_anywhere is False
    assert cfg.attach.ssh_port == 22
    assert dict(cfg.tags) == {
        "project": "edge-training",
        "stack": "dev",
        "managed-by": "pulumi",
        "cost-center": "ml-platform",
        "owner": "data-science",
    }


def test_values_arrive_as_strings_from_the_pulumi_runtime() -> None:
    # The engine hands every value over as text: arrays as JSON, numbers and booleans as words.
    cfg = parse(
        {"hubSshSourceCidrs": '["10.1.0.0/16", "192.0.2.7/32"]', "sshPort": "2222", "hubAllowSshFromAnywhere": "false"}
    )
    assert cfg.hub.ssh_source_cidrs == ("10.1.0.0/16", "192.0.2.7/32")
    assert cfg.attach.ssh_port == 2222


def test_the_private_key_stays_out_of_repr() -> None:
    cfg = parse()
    assert "PRIVATE KEY" not in repr(cfg)


BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("storage account too short", {"hubStorageAccountName": "ab"}, "hubStorageAccountName"),
    ("storage account uppercase", {"workspaceStorageAccountName": "StAccount1"}, "workspaceStorageAccountName"),
    ("registry with hyphen", {"registryName": "my-registry"}, "registryName"),
    ("registry too short", {"registryName": "cr1"}, "registryName"),
    ("workspace too long", {"workspaceName": "w" * 34}, "workspaceName"),
    ("workspace starts with hyphen", {"workspaceName": "-mlw"}, "workspaceName"),
    ("compute starts with digit", {"computeName": "1edge"}, "computeName"),
    ("compute too long", {"computeName": "edge-compute-target"}, "computeName"),
    ("compute one character", {"computeName": "e"}, "computeName"),
    ("cidr unparsable", {"hubSshSourceCidrs": ["10.0.0.0/33"]}, "hubSshSourceCidrs"),
    ("cidr host bits set", {"hubSshSourceCidrs": ["10.0.0.1/24"]}, "hubSshSourceCidrs"),
    ("ssh from star", {"hubSshSourceCidrs": ["*"]}, "hubSshSourceCidrs"),
    ("ssh from 0.0.0.0/0", {"hubSshSourceCidrs": ["0.0.0.0/0"]}, "hubSshSourceCidrs"),
    ("ssh from Internet tag", {"hubSshSourceCidrs": ["Internet"]}, "hubSshSourceCidrs"),
    ("ssh from ::/0", {"hubSshSourceCidrs": ["10.0.0.0/8", "::/0"]}, "hubSshSourceCidrs"),
    ("no ssh source", {"hubSshSourceCidrs": [], "edgeComputeMode": "virtual-machine"}, "hubSshSourceCidrs"),
    ("gpu size", {"hubVmSize": "Standard_NC6"}, "hubVmSize"),
    ("dv3 size", {"hubVmSize": "Standard_D2s_v3"}, "hubVmSize"),
    ("ssh public key garbage", {"hubSshPublicKey": "ssh-rsa not-base64!"}, "hubSshPublicKey"),
    ("ssh public key ed25519", {"hubSshPublicKey": ed25519_key().public_openssh}, "hubSshPublicKey"),
    ("endpoint http", {"hubArmEndpoint": "http://management.local.azurestack.external"}, "hubArmEndpoint"),
    ("endpoint not a url", {"hubArmEndpoint": "management.local.azurestack.external"}, "hubArmEndpoint"),
    ("endpoint with path", {"hubArmEndpoint": "https://management.local.azurestack.external/x"}, "hubArmEndpoint"),
    ("hub subscription not uuid", {"hubSubscriptionId": "my-subscription"}, "hubSubscriptionId"),
    ("azure subscription not uuid", {"subscriptionId": "1234"}, "subscriptionId"),
    ("region display name", {"location": "West Europe"}, "location"),
    ("gen2 image", {"hubImageSku": "22_04-lts-gen2"}, "hubImageSku"),
    ("image version", {"hubImageVersion": "newest"}, "hubImageVersion"),
    ("reserved admin", {"hubAdminUsername": "root"}, "hubAdminUsername"),
    ("admin uppercase", {"hubAdminUsername": "AzureUser"}, "hubAdminUsername"),
    ("subnet outside vnet", {"hubSubnetPrefix": "10.99.1.0/24"}, "hubSubnetPrefix"),
    ("port out of range", {"sshPort": 70000}, "sshPort"),
    ("port not a number", {"sshPort": "twenty-two"}, "sshPort"),
    ("disk too small", {"hubOsDiskSizeGb": 10}, "hubOsDiskSizeGb"),
    ("docker version", {"hubDockerVersion": "latest"}, "hubDockerVersion"),
    ("unknown bootstrap", {"hubBootstrap": "ansible"}, "hubBootstrap"),
    ("unknown identity provider", {"hubIdentityProvider": "ldap"}, "hubIdentityProvider"),
    ("azuread without tenant", {"hubTenantId": None}, "hubTenantId"),
    ("registry sku", {"registrySku": "Ultra"}, "registrySku"),
    ("private registry not premium", {"registryPublicNetworkAccess": False}, "registryPublicNetworkAccess"),
    ("boolean typo", {"workspacePublicNetworkAccess": "yes"}, "workspacePublicNetworkAccess"),
    ("tag without value", {"tags": ["owner"]}, "tags"),
    ("tag overrides a base tag", {"tags": ["stack=prod"]}, "tags"),
    ("bad container", {"hubDataContainerName": "Training_Data"}, "hubDataContainerName"),
    ("fingerprint format", {"sshHostKeyFingerprint": "aa:bb:cc"}, "sshHostKeyFingerprint"),
    ("resource id format", {"computeResourceId": "/subscriptions/x/vm"}, "computeResourceId"),
    ("private key garbage", {"sshPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nxx\n"}, "sshPrivateKey"),
    ("private key of another pair", {"sshPrivateKey": rsa_key("other").private_pem}, "sshPrivateKey"),
    ("missing required key", {"hubResourceGroupName": None}, "hubResourceGroupName"),
    ("typo in a key", {"hubVmSise": "Standard_DS2_v2"}, "hubVmSise"),
]


@pytest.mark.parametrize(("overrides", "key"), [(o, k) for _, o, k in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS])
def test_bad_input_is_refused_naming_its_key(overrides: dict[str, Any], key: str) -> None:
    problems = problems_for(overrides)
    assert key in problems, problems
    # Only the key at fault is blamed: the rest of the example stack is valid.
    assert set(problems) == {key}


def test_ssh_from_everywhere_is_allowed_only_by_the_named_opt_out() -> None:
    cfg = parse({"hubSshSourceCidrs": ["0.0.0.0/0"], "hubAllowSshFromAnywhere": True})
    assert cfg.hub.ssh_source_cidrs == ("0.0.0.0/0",)
    assert cfg.hub.allow_ssh_from_anywhere is True


def test_a_private_key_set_in_plain_text_is_refused() -> None:
    problems = problems_for({}, secret_keys=())
    assert set(problems) == {"sshPrivateKey"}
    assert "--secret" in problems["sshPrivateKey"]


def test_a_typo_gets_a_suggestion() -> None:
    assert "did you mean hubVmSize" in problems_for({"hubVmSise": "x"})["hubVmSise"]


def test_every_problem_is_reported_in_one_error() -> None:
    with pytest.raises(stack_config.ConfigError) as caught:
        parse({"registryName": "x", "hubVmSize": "Standard_NC6", "sshPort": 0, "hubSshSourceCidrs": ["*"]})
    assert caught.value.keys == {"registryName", "hubVmSize", "sshPort", "hubSshSourceCidrs"}
    message = str(caught.value)
    for key in caught.value.keys:
        assert f"edge-training:{key}:" in message


def test_invalid_config_registers_no_resource() -> None:
    config = dev_stack_config() | {"hubVmSize": "Standard_NC6", "registryName": "x"}
    # Cleared first: a monitor left by an earlier test would make "nothing recorded" meaningless.
    pulumi_mocks.LastRun.monitor = None
    with pytest.raises(stack_config.ConfigError):
        pulumi_mocks.run_program(config, secret_keys=DEV_SECRET_KEYS)
    monitor = pulumi_mocks.LastRun.monitor
    assert monitor is not None, "the program did not run"
    assert monitor.recorded == []
    # The same program with valid config does declare resources, so the empty list is the check's doing.
    assert recorded_stack().resources


@pytest.mark.parametrize(
    "family_size",
    [
        "Standard_A2",
        "Standard_A2_v2",
        "Standard_A4m_v2",
        "Standard_D2",
        "Standard_D2_v2",
        "Standard_DS2",
        "Standard_DS3_v2",
        "Standard_F4",
        "Standard_F4s",
        "Standard_F8s_v2",
    ],
)
def test_each_hub_size_family_is_accepted(family_size: str) -> None:
    # The family check alone: the Kubernetes mode also refuses sizes too small (test_edge_config).
    cfg = parse({"hubVmSize": family_size, "edgeComputeMode": "virtual-machine"})
    assert cfg.hub.vm_size == family_size


@pytest.mark.parametrize("stack", ["dev", "prod", "Feature_Branch-42", "a" * 60, "x"])
def test_derived_names_are_valid_and_stable_for_any_stack(stack: str) -> None:
    first = parse(stack=stack)
    again = parse(stack=stack)
    assert first == again
    assert naming.STORAGE_ACCOUNT.problem(first.azure.workspace_storage_account_name) is None
    assert naming.STORAGE_ACCOUNT.problem(first.hub.storage_account_name) is None
    assert naming.CONTAINER_REGISTRY.problem(first.azure.registry_name) is None
    assert naming.ML_WORKSPACE.problem(first.azure.workspace_name) is None
    assert naming.RESOURCE_GROUP.problem(first.azure.created_resource_group_name) is None


def test_globally_unique_names_differ_between_stacks_and_organizations() -> None:
    dev, prod = parse(stack="dev"), parse(stack="prod")
    assert dev.azure.registry_name != prod.azure.registry_name
    raw = dev_stack_config()
    other_org = stack_config.parse(raw, stack="dev", organization="contoso", secret_keys=DEV_SECRET_KEYS)
    assert other_org.azure.registry_name != dev.azure.registry_name
    assert other_org.hub.storage_account_name != dev.hub.storage_account_name


def test_pulumi_yaml_describes_every_key_and_types_its_defaults() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    python_type = {"string": str, "boolean": bool, "integer": int, "array": list}
    for key, spec in declared.items():
        assert spec.get("description"), f"{key} has no description"
        if "default" in spec:
            assert isinstance(spec["default"], python_type[spec["type"]]), key
    # Secrets have no default and are declared secret, so Pulumi refuses them in plain text.
    assert declared["sshPrivateKey"].get("secret") is True


def test_the_example_stack_sets_only_declared_keys_with_their_declared_types() -> None:
    declared = stack_config.load_schema()
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    python_type = {"string": str, "boolean": bool, "integer": int, "array": list}
    for full_key, value in raw.items():
        key = full_key.removeprefix("edge-training:")
        assert key in declared, full_key
        assert isinstance(value, python_type[declared[key].type]), f"{full_key}: {value!r}"
    # Every required key has an example value (the placeholders are marked).
    required = {k for k, spec in declared.items() if not spec.has_default and not spec.secret}
    assert required <= {k.removeprefix("edge-training:") for k in raw}
    assert re.search(r"pulumi config set --secret sshPrivateKey", (ROOT / "Pulumi.dev.yaml").read_text())
