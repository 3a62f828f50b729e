"""Stack configuration, adversarially: each row is a bad input a new user or an unlucky operator
would write. Every row goes through the real path (the program under Pulumi mocks reads the
config, components/config.py parses it) and must end in one ConfigError that names the key and
says why, with no resource declared and no secret repeated."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from components import config as stack_config
from policy.baseline import no_ssh_from_everywhere
from tests.conftest import DEV_SECRET_KEYS, dev_stack_config, recorded_stack
from tests.harness import pulumi_mocks
from tests.harness.keys import rsa_key

PASSWORD = "pa55w0rd-never-echo"  # must never appear in a message


def _pem(key: Any, fmt: serialization.PrivateFormat, passphrase: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


@cache
def vm_key() -> rsa.RSAPrivateKey:
    """The private half of the example stack's key pair (tests/conftest.py uses rsa_key("vm-admin"))."""
    key = serialization.load_pem_private_key(rsa_key("vm-admin").private_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@cache
def small_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (a key to refuse)


def _public(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


ED25519 = ed25519.Ed25519PrivateKey.generate()
ECDSA = ec.generate_private_key(ec.SECP256R1())
F = serialization.PrivateFormat

# (case id, overrides (None removes a key), key that must be named, fragment of the reason)
VM = "edgeComputeMode"
ROWS: list[tuple[str, dict[str, Any], str, str]] = [
    # --- required means non-empty
    ("endpoint empty", {"hubArmEndpoint": ""}, "hubArmEndpoint", "required and is empty"),
    ("hub subscription empty", {"hubSubscriptionId": ""}, "hubSubscriptionId", "required and is empty"),
    ("hub resource group empty", {"hubResourceGroupName": ""}, "hubResourceGroupName", "required and is empty"),
    ("hub resource group blanks", {"hubResourceGroupName": "   "}, "hubResourceGroupName", "required and is empty"),
    ("public key empty", {"hubSshPublicKey": ""}, "hubSshPublicKey", "required and is empty"),
    # The attach by SSH needs a key and sources; the kubernetes mode (the default) needs neither.
    ("private key empty", {VM: "virtual-machine", "sshPrivateKey": ""}, "sshPrivateKey", "required"),
    (
        "private key missing",
        {VM: "virtual-machine", "sshPrivateKey": None},
        "sshPrivateKey",
        "pulumi config set --secret sshPrivateKey",
    ),
    ("ssh sources empty list", {VM: "virtual-machine", "hubSshSourceCidrs": []}, "hubSshSourceCidrs", "at least one"),
    # --- SSH from everywhere, however it is written
    ("ssh ::/0 spelled 0::/0", {"hubSshSourceCidrs": ["0::/0"]}, "hubSshSourceCidrs", "all of IPv6"),
    ("ssh 0/0 as netmask", {"hubSshSourceCidrs": ["0.0.0.0/0.0.0.0"]}, "hubSshSourceCidrs", "all of IPv4"),
    (
        "ssh split in halves",
        {"hubSshSourceCidrs": ["0.0.0.0/1", "128.0.0.0/1"]},
        "hubSshSourceCidrs",
        "together cover all of IPv4",
    ),
    (
        "ssh split in quarters among real networks",
        {"hubSshSourceCidrs": ["203.0.113.0/24", "0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2"]},
        "hubSshSourceCidrs",
        "together cover all of IPv4",
    ),
    ("ssh ipv6 halves", {"hubSshSourceCidrs": ["::/1", "8000::/1"]}, "hubSshSourceCidrs", "all of IPv6"),
    ("ssh ipv4-mapped ipv6", {"hubSshSourceCidrs": ["::ffff:0:0/96"]}, "hubSshSourceCidrs", "all of IPv4"),
    ("ssh ANY upper case", {"hubSshSourceCidrs": ["ANY"]}, "hubSshSourceCidrs", "means every address"),
    ("ssh padded 0/0", {"hubSshSourceCidrs": [" 0.0.0.0/0 "]}, "hubSshSourceCidrs", "all of IPv4"),
    ("ssh bare any-address", {"hubSshSourceCidrs": ["0.0.0.0"]}, "hubSshSourceCidrs", "all of IPv4"),  # noqa: S104
    # --- private key formats: one place accepts and refuses them (clients/ssh_keys.py)
    (
        "private key openssh with passphrase",
        {"sshPrivateKey": _pem(vm_key(), F.OpenSSH, b"secret")},
        "sshPrivateKey",
        "passphrase",
    ),
    (
        "private key pkcs8 with passphrase",
        {"sshPrivateKey": _pem(vm_key(), F.PKCS8, b"secret")},
        "sshPrivateKey",
        "passphrase",
    ),
    (
        "private key pkcs1 with passphrase",
        {"sshPrivateKey": _pem(vm_key(), F.TraditionalOpenSSL, b"secret")},
        "sshPrivateKey",
        "passphrase",
    ),
    ("private key ed25519", {"sshPrivateKey": _pem(ED25519, F.OpenSSH)}, "sshPrivateKey", "not an RSA key"),
    ("private key ecdsa pem", {"sshPrivateKey": _pem(ECDSA, F.TraditionalOpenSSL)}, "sshPrivateKey", "not an RSA key"),
    ("private key ecdsa pkcs8", {"sshPrivateKey": _pem(ECDSA, F.PKCS8)}, "sshPrivateKey", "not an RSA key"),
    ("private key 1024 bits", {"sshPrivateKey": _pem(small_rsa(), F.PKCS8)}, "sshPrivateKey", "1024 bits"),
    ("private key is the public key", {"sshPrivateKey": _public(vm_key())}, "sshPrivateKey", "is a public key"),
    (
        "private key truncated",
        {"sshPrivateKey": _pem(vm_key(), F.PKCS8)[:400]},
        "sshPrivateKey",
        "damaged or truncated",
    ),
    (
        "private key putty",
        {"sshPrivateKey": "PuTTY-User-Key-File-3: ssh-rsa\nEncryption: none\n"},
        "sshPrivateKey",
        "PuTTY",
    ),
    ("private key of another pair", {"sshPrivateKey": rsa_key("other").private_openssh}, "sshPrivateKey", "match"),
    # --- public key: RSA of 2048 bits or more, the same rule as the private half
    ("public key ed25519", {"hubSshPublicKey": _public(ED25519)}, "hubSshPublicKey", "not an RSA key"),
    ("public key ecdsa", {"hubSshPublicKey": _public(ECDSA)}, "hubSshPublicKey", "not an RSA key"),
    ("public key 1024 bits", {"hubSshPublicKey": _public(small_rsa())}, "hubSshPublicKey", "1024 bits"),
    (
        "public key is a private key",
        {"hubSshPublicKey": rsa_key("vm-admin").private_pem},
        "hubSshPublicKey",
        "is a private key",
    ),
    # --- tags (Microsoft Learn, "Use tags to organize your Azure resources": limits)
    ("51 tags", {"tags": [f"t{i}=v" for i in range(48)]}, "tags", "Azure allows 50"),
    ("tag names differing in case", {"tags": ["team=a", "Team=b"]}, "tags", "ignore case"),
    ("tag shadowing a base tag in other case", {"tags": ["Stack=prod"]}, "tags", "set by the program"),
    ("tag name of 129 characters", {"tags": ["k" * 129 + "=v"]}, "tags", "at most 128"),
    ("tag value of 257 characters", {"tags": ["k=" + "v" * 257]}, "tags", "at most 256"),
    ("tag name with a slash", {"tags": ["team/name=ml"]}, "tags", "contains /"),
    # --- networks (Microsoft Learn, "Azure Virtual Network FAQ")
    ("subnet /32", {"hubSubnetPrefix": "10.20.1.0/32"}, "hubSubnetPrefix", "smallest subnet"),
    ("subnet /30", {"hubSubnetPrefix": "10.20.1.0/30"}, "hubSubnetPrefix", "Azure reserves 5"),
    (
        "vnet on loopback",
        {"hubVnetAddressSpace": "127.0.0.0/8", "hubSubnetPrefix": "127.0.1.0/24"},
        "hubVnetAddressSpace",
        "overlaps 127.0.0.0/8",
    ),
    (
        "vnet over the platform DNS address",
        {"hubVnetAddressSpace": "168.63.0.0/16", "hubSubnetPrefix": "168.63.1.0/24"},
        "hubVnetAddressSpace",
        "168.63.129.16/32",
    ),
    # --- the Hub endpoint
    (
        "endpoint with user:password",
        {"hubArmEndpoint": f"https://admin:{PASSWORD}@management.local.azurestack.external"},
        "hubArmEndpoint",
        "user name or password",
    ),
    (
        "endpoint port 99999",
        {"hubArmEndpoint": "https://management.local.azurestack.external:99999"},
        "hubArmEndpoint",
        "port",
    ),
    (
        "endpoint port 0",
        {"hubArmEndpoint": "https://management.local.azurestack.external:0"},
        "hubArmEndpoint",
        "port 0",
    ),
    (
        "endpoint port text",
        {"hubArmEndpoint": "https://management.local.azurestack.external:https"},
        "hubArmEndpoint",
        "port",
    ),
    (
        "endpoint host with underscore",
        {"hubArmEndpoint": "https://management_local.example"},
        "hubArmEndpoint",
        "host name",
    ),
    (
        "endpoint host with a space",
        {"hubArmEndpoint": "https://management local.example"},
        "hubArmEndpoint",
        "not an https URL",
    ),
    # --- regions from the list shipped with the project
    ("invented region", {"location": "atlantis"}, "location", "not an Azure region name"),
    ("region typo", {"location": "westeurpoe"}, "location", "did you mean westeurope"),
    ("region display name", {"location": "West Europe"}, "location", "did you mean westeurope"),
    ("region with hyphen", {"location": "west-europe"}, "location", "did you mean westeurope"),
    # --- Hub sizes: families the Hub offers, GPU ones included, nothing else
    ("first-generation NC", {"hubVmSize": "Standard_NC6"}, "hubVmSize", "size family"),
    ("NCv3 size that does not exist", {"hubVmSize": "Standard_NC48s_v3"}, "hubVmSize", "size family"),
    # --- secrets given with the wrong type are not echoed
    ("private key as a number", {"sshPrivateKey": 12345}, "sshPrivateKey", "a secret value"),
]


def _run(overrides: dict[str, Any]) -> stack_config.ConfigError:
    config = dev_stack_config()
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    pulumi_mocks.LastRun.monitor = None  # so that the monitor checked below is this run's
    with pytest.raises(stack_config.ConfigError) as caught:
        pulumi_mocks.run_program(config, secret_keys=DEV_SECRET_KEYS)
    return caught.value


@pytest.mark.parametrize(("overrides", "key", "fragment"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_naming_its_key_and_nothing_is_declared(
    overrides: dict[str, Any], key: str, fragment: str
) -> None:
    error = _run(overrides)
    assert error.keys == {key}, str(error)
    reasons = " | ".join(p.reason for p in error.problems)
    assert fragment in reasons, reasons
    assert f"edge-training:{key}:" in str(error)
    monitor = pulumi_mocks.LastRun.monitor
    assert monitor is not None, "the program did not run"
    assert monitor.recorded == [], [r.name for r in monitor.recorded]
    # No secret in the message: neither the stack's private key nor a password in a URL.
    message = str(error)
    assert PASSWORD not in message
    for line in rsa_key("vm-admin").private_pem.splitlines()[1:-1]:
        assert line not in message
    for value in overrides.values():
        if isinstance(value, str) and "PRIVATE KEY" in value:
            assert value.splitlines()[1] not in message


def test_no_row_is_blamed_on_the_example_stack() -> None:
    # The rows above rely on the example stack being valid: each row's error is its own.
    assert recorded_stack().resources


# --- what is accepted, and what it becomes -----------------------------------------------------------


def parse(overrides: dict[str, Any]) -> stack_config.StackConfig:
    return stack_config.parse(dev_stack_config() | overrides, stack="dev", secret_keys=DEV_SECRET_KEYS)


@pytest.mark.parametrize("fmt", [F.PKCS8, F.OpenSSH, F.TraditionalOpenSSL], ids=["pkcs8", "openssh", "pkcs1"])
def test_each_rsa_private_key_format_is_accepted_and_converted_for_azure_ml(fmt: serialization.PrivateFormat) -> None:
    text = _pem(vm_key(), fmt)
    key = parse({"sshPrivateKey": text}).attach.ssh_private_key
    # Azure ML's privateKeyData takes the traditional PEM; the same key, whatever came in.
    assert key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert key == rsa_key("vm-admin").private_pem


def test_normalised_sources_reach_the_nsg() -> None:
    cfg = parse({"hubSshSourceCidrs": ["203.0.113.0/255.255.255.0", "2001:0db8:0000::/48", "203.0.113.0/24"]})
    assert cfg.hub.ssh_source_cidrs == ("203.0.113.0/24", "2001:db8::/48")


def test_a_split_that_misses_one_address_is_not_everywhere() -> None:
    cfg = parse({"hubSshSourceCidrs": ["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4"]})
    assert len(cfg.hub.ssh_source_cidrs) == 4


@pytest.mark.parametrize("sources", [["0.0.0.0/1", "128.0.0.0/1"], ["0::/0"], ["0.0.0.0/0.0.0.0"]])
def test_everywhere_passes_with_the_opt_out_and_the_pack_still_flags_it(sources: list[str]) -> None:
    # The program accepts it only with the named opt-out, and the policy pack, judging the NSG
    # the program declares with the same function, refuses it all the same.
    recording = recorded_stack({"hubSshSourceCidrs": sources, "hubAllowSshFromAnywhere": True})
    found = [m for r in recording.resources for m in no_ssh_from_everywhere(r.type, r.inputs)]
    assert len(found) == 1 and "from everywhere" in found[0], found


@pytest.mark.parametrize("size", ["Standard_NC6s_v3", "Standard_NC24s_v3"])
def test_hub_gpu_sizes_are_accepted(size: str) -> None:
    assert parse({"hubVmSize": size}).hub.vm_size == size


# NVv4 (partitioned AMD MI25): Linux guests are not supported on the Hub (issue 24, docs/deploy/gpus.md).
@pytest.mark.parametrize("size", ["Standard_NV4as_v4", "Standard_NV32as_v4"])
@pytest.mark.parametrize("mode", ["kubernetes", "virtual-machine"])
def test_hub_nvv4_sizes_are_refused_with_the_reason(size: str, mode: str) -> None:
    with pytest.raises(stack_config.ConfigError) as raised:
        parse({"hubVmSize": size, "edgeComputeMode": mode})
    assert raised.value.keys == {"hubVmSize"}
    assert "support only a Windows guest" in str(raised.value)


def test_the_smallest_subnet_azure_allows_is_accepted() -> None:
    assert parse({"hubSubnetPrefix": "10.20.1.0/29"}).hub.subnet_prefix == "10.20.1.0/29"


def test_fifty_tags_are_accepted() -> None:
    cfg = parse({"tags": [f"t{i}=v" for i in range(47)]})
    assert len(cfg.tags) == stack_config.MAX_TAGS


def test_an_endpoint_with_a_port_is_accepted() -> None:
    cfg = parse({"hubArmEndpoint": "https://management.local.azurestack.external:30024/"})
    assert cfg.hub.arm_endpoint == "https://management.local.azurestack.external:30024"
