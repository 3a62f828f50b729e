"""First boot on an operator's network (edge/real_edge.py), run in the throwaway root of
tests/test_first_boot.py: the operator's CAs in the system store and for jobs, and every command
that downloads (curl, apt-get, K3s's installer, Helm) started with the proxy in its environment,
the proxy's credentials in no argument, log line or world-readable file; the Arc agents' chart
values carry the proxy as `az connectedk8s connect --proxy-*` sets them."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from components import config as stack_config
from edge import first_boot, real_edge
from edge.real_edge import EdgeNetwork, EdgeNetworkError
from tests.conftest import DEV_SECRET_KEYS, dev_stack_config, recorded_stack
from tests.harness import services
from tests.harness.private_ca import make_private_ca
from tests.harness.services import write_shim
from tests.test_first_boot import PRELUDE, STUBS, calls, make_system, run
from tests.test_k3s_first_boot import SERVER, every_role, on_vm, pinned_to_fixtures
from tests.test_k3s_first_boot import system as k3s_system  # noqa: F401 (a fixture)

PROXY_PASSWORD = "pr0xy-s3cret-Zq"
HTTPS_PROXY = f"http://edge:{PROXY_PASSWORD}@proxy.contoso.example:3128"
HTTP_PROXY = f"http://edge:{PROXY_PASSWORD}@proxy.contoso.example:3128"
UPDATE_CA = 'echo "update-ca-certificates $*" >> "$STATE/calls"\n'
HUB_ARM = "pulumi-python:dynamic/edge-training:HubArmResource"
HUB_DOMAIN = ".local.azurestack.external"
VNET = "10.20.0.0/16"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("cas")
    return make_private_ca(folder / "hub").ca_pem, make_private_ca(folder / "proxy", "Contoso Proxy CA").ca_pem


def network(cas: tuple[str, str], **changes: object) -> EdgeNetwork:
    fields = {
        "hub_ca_pem": cas[0],
        "http_proxy": HTTP_PROXY,
        "https_proxy": HTTPS_PROXY,
        "no_proxy": (HUB_DOMAIN, VNET),
        "proxy_ca_pem": cas[1],
    }
    return EdgeNetwork(**{**fields, **changes})  # type: ignore[arg-type]


def stub_runs(system: dict[str, Path]) -> list[tuple[str, dict[str, str]]]:
    """(command line, environment) of every stub call, from the stubs' own record."""
    runs: list[tuple[str, dict[str, str]]] = []
    for block in (system["state"] / "env").read_text().split("== ")[1:]:
        head, *lines = block.splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        runs.append((head, env))
    return runs


def assert_proxied(system: dict[str, Path], commands: tuple[str, ...]) -> None:
    runs = [(head, env) for head, env in stub_runs(system) if head.split()[0] in commands]
    assert {head.split()[0] for head, _ in runs} == set(commands), [h for h, _ in runs]
    for head, env in runs:
        assert env.get("HTTPS_PROXY") == HTTPS_PROXY and env.get("https_proxy") == HTTPS_PROXY, head
        direct = env.get("NO_PROXY", "").split(",")
        for entry in (*real_edge.ALWAYS_DIRECT, HUB_DOMAIN, VNET):
            assert entry in direct, (head, entry)


def assert_credentials_nowhere_visible(system: dict[str, Path], result: subprocess.CompletedProcess[str]) -> None:
    assert PROXY_PASSWORD not in result.stdout + result.stderr  # the log
    assert not [c for c in calls(system) if PROXY_PASSWORD in c]  # any command line
    for path in system["root"].rglob("*"):
        if path.is_file() and PROXY_PASSWORD in path.read_text(errors="replace"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # root-only files only


def test_a_docker_vm_trusts_the_cas_and_goes_out_through_the_proxy(tmp_path: Path, cas: tuple[str, str]) -> None:
    system = make_system(tmp_path, {**STUBS, "update-ca-certificates": UPDATE_CA})
    script = first_boot.render_script("azureuser", "27.5.1", network=network(cas))
    assert first_boot.holds_secrets(script)  # a proxy URL may carry credentials: written root-only
    result = run(system, script)
    assert result.returncode == 0, result.stderr
    log = calls(system)
    # The CAs are trusted before anything is fetched, so a TLS-inspecting proxy is trusted too.
    assert log.index("update-ca-certificates ") < min(i for i, c in enumerate(log) if c.startswith(("curl", "apt-get")))
    store = on_vm(system, real_edge.CA_DIRECTORY_ON_VM)
    assert sorted(p.name for p in store.iterdir()) == ["hub-ca-1.crt", "proxy-ca-2.crt"]
    assert (store / "hub-ca-1.crt").read_text().strip() == cas[0].strip()
    assert on_vm(system, real_edge.HUB_CA_ON_VM).read_text().strip() == cas[0].strip()  # mounted into jobs
    assert not on_vm(system, real_edge.HUB_CA_FOR_JOBS).exists()  # no cluster on a Docker-only VM
    assert_proxied(system, ("curl", "apt-get"))
    apt = on_vm(system, real_edge.APT_PROXY_CONF).read_text()
    assert f'Acquire::https::Proxy "{HTTPS_PROXY}";' in apt and f'Acquire::http::Proxy "{HTTP_PROXY}";' in apt
    docker = on_vm(system, real_edge.DOCKER_PROXY_DROP_IN).read_text()
    assert docker.startswith("[Service]\n") and f'Environment="HTTPS_PROXY={HTTPS_PROXY}"' in docker
    assert "systemctl daemon-reload" in log
    assert_credentials_nowhere_visible(system, result)

    # A second run changes nothing: no store update, no daemon reload.
    (system["state"] / "calls").write_text("")
    again = run(system, script)
    assert again.returncode == 0, again.stderr
    assert not [c for c in calls(system) if c.startswith(("update-ca-certificates", "systemctl daemon-reload"))]


def test_a_k3s_server_gives_k3s_helm_and_the_arc_agents_the_proxy(k3s_system, cas: tuple[str, str]) -> None:  # noqa: F811
    system = k3s_system
    write_shim(system["stubs"], "update-ca-certificates", PRELUDE + UPDATE_CA)
    script = pinned_to_fixtures(
        first_boot.render_script("azureuser", "27.5.1", server=SERVER, network=network(cas)), system
    )
    result = run(system, script)
    assert result.returncode == 0, result.stderr
    assert_proxied(system, ("curl", "apt-get", "install.sh", "helm"))
    # K3s's installer copies HTTP(S)_PROXY/NO_PROXY from its environment into the unit's env file.
    assert on_vm(system, real_edge.HUB_CA_FOR_JOBS).read_text().strip() == cas[0].strip()
    values = json.loads((system["state"] / "received-values").read_text())["global"]
    assert values["isProxyEnabled"] is True
    assert values["httpsProxy"] == HTTPS_PROXY and values["httpProxy"] == HTTP_PROXY
    assert set(values["noProxy"].split(",")) >= {*real_edge.ALWAYS_DIRECT, HUB_DOMAIN, VNET}
    assert values["proxyCert"].strip() == cas[1].strip()
    assert_credentials_nowhere_visible(system, result)


def test_without_a_network_nothing_changes() -> None:
    plain = first_boot.render_script("azureuser", "27.5.1")
    assert not first_boot.holds_secrets(plain)
    # No CA written, no proxy file (and the stubs of test_first_boot.py have no update-ca-certificates).
    assert 'write_public "$ROOT' not in plain and "proxy.env" not in plain
    assert "isProxyEnabled" not in first_boot.arc_helm_values(SERVER.arc)["global"]


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"https_proxy": "proxy.contoso.example:3128"}, "is not an http:// or https:// URL"),
        ({"https_proxy": "http://u:p@proxy:3128/path"}, "without a path"),
        ({"http_proxy": "http://proxy:3128/$(reboot)"}, "without a path"),
        ({"no_proxy": ("bad host!",)}, "neither a host"),
        ({"http_proxy": "", "https_proxy": ""}, "proxy_ca_pem is set without a proxy"),
    ],
)
def test_settings_the_vm_would_misread_are_refused_without_the_password(
    cas: tuple[str, str], changes: dict[str, object], said: str
) -> None:
    with pytest.raises(EdgeNetworkError, match=said) as caught:
        first_boot.render_script("azureuser", "27.5.1", network=network(cas, **changes))
    assert ":p@" not in str(caught.value) and PROXY_PASSWORD not in str(caught.value)


def test_rendered_scripts_with_a_network_pass_shellcheck(tmp_path: Path, cas: tuple[str, str]) -> None:
    assert services.shellcheck(every_role(network=network(cas)), tmp_path) == ""


# --- from the stack's configuration ------------------------------------------------------------------


def parse(overrides: dict[str, object]) -> stack_config.StackConfig:
    raw = dev_stack_config(overrides)
    return stack_config.parse(raw, stack="dev", organization="acme", secret_keys=(*DEV_SECRET_KEYS, "edgeHttpsProxy"))


def test_the_config_adds_the_hubs_domain_and_the_vnet_to_what_goes_direct(cas: tuple[str, str]) -> None:
    cfg = parse({"edgeHttpsProxy": HTTPS_PROXY, "edgeNoProxy": ["10.99.0.0/16"], "edgeProxyCaCertificate": cas[1]})
    net = cfg.hub.edge_network
    assert net.https_proxy == HTTPS_PROXY and net.proxy_ca_pem == cas[1].strip()
    hub_host = cfg.hub.arm_endpoint.split("//", 1)[1].split("/")[0].split(":")[0]
    assert "." + hub_host.split(".", 1)[1] in net.no_proxy  # the Hub's endpoints share its domain
    assert cfg.hub.vnet_address_space in net.no_proxy and "10.99.0.0/16" in net.no_proxy
    assert parse({}).hub.edge_network.proxied is False


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"edgeHttpsProxy": f"socks5://edge:{PROXY_PASSWORD}@proxy:1080"}, "edgeHttpsProxy"),
        ({"edgeNoProxy": ["not a host"]}, "edgeNoProxy"),
        (
            {"edgeProxyCaCertificate": "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----"},
            "edgeProxyCaCertificate",
        ),
    ],
)
def test_bad_proxy_settings_are_named_and_never_echo_the_password(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(stack_config.ConfigError) as caught:
        parse({"edgeHttpsProxy": HTTPS_PROXY, **overrides})
    assert key in [p.key for p in caught.value.problems]
    assert PROXY_PASSWORD not in str(caught.value)


def test_the_program_hands_the_network_to_the_vms_first_boot(cas: tuple[str, str]) -> None:
    recording = recorded_stack(
        {"edgeComputeMode": "virtual-machine", "edgeHttpsProxy": HTTPS_PROXY, "hubCaCertificates": cas[0]},
        secret_keys=(*DEV_SECRET_KEYS, "edgeHttpsProxy"),
    )
    [vm] = [r for r in recording.of_type(HUB_ARM) if r.inputs["resourceType"] == "virtualMachines"]
    custom_data = vm.inputs["secretProperties"]["osProfile"]["customData"]
    script = base64.b64decode(
        yaml.safe_load(base64.b64decode(custom_data).decode())["write_files"][0]["content"]
    ).decode()
    assert "use_edge_proxy" in script and HTTPS_PROXY in script and cas[0].strip().splitlines()[1] in script
    assert first_boot.holds_secrets(script)


def test_a_proxy_password_in_plain_text_config_is_refused() -> None:
    raw = dev_stack_config({"edgeHttpsProxy": HTTPS_PROXY})
    with pytest.raises(stack_config.ConfigError) as caught:
        stack_config.parse(raw, stack="dev", organization="acme", secret_keys=DEV_SECRET_KEYS)
    [problem] = caught.value.problems
    assert problem.key == "edgeHttpsProxy" and "--secret" in problem.reason
    assert PROXY_PASSWORD not in str(caught.value)
    # Without credentials, plain text is fine.
    plain = stack_config.parse(
        dev_stack_config({"edgeHttpsProxy": "http://proxy.contoso.example:3128"}),
        stack="dev",
        organization="acme",
        secret_keys=DEV_SECRET_KEYS,
    )
    assert plain.hub.edge_network.proxied
