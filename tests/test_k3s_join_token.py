"""Rotating the K3s join token (k3sJoinTokenRotation), run for real: the server and two agents of
tests/test_k3s_upgrade.py, each in its throwaway root, sharing one stand-in cluster that now also
models the token.

The stand-in refuses like K3s does: a server started with a token other than the one its bootstrap
data is encrypted with does not start; an agent keeps retrying until the server accepts its token
(K3s's agent loops on a 401) and gives up after a while; the rotation endpoint (`PUT
/v1-k3s/token`, pkg/server/handlers/token.go) answers 401 to anything but `server` with the token
the server holds, then writes the new one to the server's token file, as K3s does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import test_k3s_upgrade as upgrade
from tests.test_first_boot import STUBS
from tests.test_k3s_first_boot import AGENT, SERVER
from tests.test_k3s_upgrade import AGENT_NODES, OLD, SERVER_NODE, Cluster

OLD_TOKEN = SERVER.join_token
NEW_TOKEN = "5f" * 32  # what the provider makes: secrets.token_hex(32)

# Before a node registers: the token check of the K3s service that starts.
JOIN = r"""conf="$EDGE_BOOTSTRAP_ROOT/etc/rancher/k3s/config.yaml"
token=$(sed -n "s/^token: '\{0,1\}\([^']*\)'\{0,1\}\$/\1/p" "$conf")
if grep -q '^server:' "$conf"; then
  tries=0
  until [ "$(cat "$CLUSTER/token" 2>/dev/null)" = "$token" ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 400 ] || { echo "k3s-agent: 401 Unauthorized: the server refused the token" >&2; exit 1; }
    sleep 0.05
  done
else
  if [ -f "$CLUSTER/token" ] && [ "$(cat "$CLUSTER/token")" != "$token" ]; then
    echo "k3s: bootstrap data already found and encrypted with different token" >&2; exit 1
  fi
  echo "$token" > "$CLUSTER/token"
  dir="$EDGE_BOOTSTRAP_ROOT/var/lib/rancher/k3s/server"; mkdir -p "$dir/tls"; : > "$dir/tls/server-ca.crt"
  printf 'K10cafe::server:%s\n' "$token" > "$dir/token"
fi
"""
REGISTER_LINE = 'node="$CLUSTER/nodes/$FAKE_HOSTNAME"; mkdir -p "$node"'

# The server's rotation endpoint, reached through `curl --config -`; other calls are the downloads.
TOKEN_API = r"""if [ "$1 $2" = "--config -" ]; then
  echo "curl $*" >> "$STATE/calls"
  options=$(cat)
  option() { printf '%s\n' "$options" | sed -n "s/^$1 = \"\(.*\)\"\$/\1/p"; }
  [ "$(option url)" = "https://127.0.0.1:6443/v1-k3s/token" ] && [ "$(option request)" = PUT ] ||
    { echo "curl: (22) The requested URL returned error: 405" >&2; exit 22; }
  [ -f "$(option cacert)" ] || { echo "curl: (77) error setting certificate file" >&2; exit 77; }
  [ "$(option user)" = "server:$(cat "$CLUSTER/token")" ] ||
    { echo "curl: (22) The requested URL returned error: 401" >&2; exit 22; }
  new=$(option data | sed -n 's/^{\\"newToken\\":\\"\(.*\)\\"}$/\1/p')
  [ -n "$new" ] || { echo "curl: (22) The requested URL returned error: 400" >&2; exit 22; }
  echo "$new" > "$CLUSTER/token"
  printf 'K10cafe::server:%s\n' "$new" > "$EDGE_BOOTSTRAP_ROOT/var/lib/rancher/k3s/server/token"
  echo "rotate" >> "$CLUSTER/events"
  exit 0
fi
"""


class TokenCluster(Cluster):
    token = OLD_TOKEN

    def script(self, node: str, version: str, agents: tuple[str, ...] = AGENT_NODES) -> str:
        script = super().script(node, version, agents)
        # The rendered config holds the token verbatim (first_boot.k3s_config), so swapping it
        # renders the script the stack renders after a rotation.
        return script.replace(OLD_TOKEN, self.token)

    def config_token(self, node: str) -> str:
        config = (self.systems[node]["root"] / "etc/rancher/k3s/config.yaml").read_text()
        return next(line.split(": ", 1)[1].strip("'") for line in config.splitlines() if line.startswith("token:"))

    def logs(self) -> str:
        return "".join((s["state"] / f).read_text() for s in self.systems.values() for f in ("calls", "env"))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TokenCluster:
    assert OLD_TOKEN != NEW_TOKEN and AGENT.join_token == OLD_TOKEN
    monkeypatch.setattr(upgrade, "SYSTEMCTL", upgrade.SYSTEMCTL.replace(REGISTER_LINE, JOIN + REGISTER_LINE))
    monkeypatch.setattr(upgrade, "INSTALLER", upgrade.INSTALLER.replace(REGISTER_LINE, JOIN + REGISTER_LINE))
    monkeypatch.setattr(upgrade, "STUBS", {**STUBS, "curl": TOKEN_API + STUBS["curl"]})
    cluster = TokenCluster(tmp_path, monkeypatch)
    cluster.boot(OLD)
    return cluster


def test_a_rotation_rekeys_the_running_server_then_every_agent_rejoins_with_the_new_token(
    cluster: TokenCluster,
) -> None:
    booted = len(cluster.events())
    cluster.token = NEW_TOKEN
    results = cluster.roll(OLD)
    assert all(code == 0 for code, _ in results.values()), results
    events = cluster.events()[booted:]
    # The server re-encrypted in place before it restarted; then each node started again.
    assert events[0] == "rotate" and events.count("rotate") == 1
    assert sorted(events[1:]) == sorted(f"start {n} {OLD}" for n in (SERVER_NODE, *AGENT_NODES))
    assert (cluster.state / "token").read_text().strip() == NEW_TOKEN
    for node in (SERVER_NODE, *AGENT_NODES):
        assert cluster.config_token(node) == NEW_TOKEN
        assert cluster.node(node, "ready") == "True" and cluster.node(node, "version") == OLD
        calls = (cluster.systems[node]["state"] / "calls").read_text().splitlines()
        assert calls.count(f"install.sh {'server' if node == SERVER_NODE else 'agent'}") == 1
    # Neither token ever reached a command line or an environment.
    logs = cluster.logs()
    assert OLD_TOKEN not in logs and NEW_TOKEN not in logs
    assert not list((cluster.systems[SERVER_NODE]["root"] / "run/edge-training").glob("k3s-config*"))
    # Nothing left to do: a second run rotates nothing and restarts nothing.
    again = len(cluster.events())
    results = cluster.roll(OLD)
    assert all(code == 0 for code, _ in results.values()), results
    assert cluster.events()[again:] == []


def test_a_rotation_interrupted_before_the_restart_resumes_without_rotating_again(cluster: TokenCluster) -> None:
    # K3s took the new token, then the script stopped before config.yaml changed.
    server_root = cluster.systems[SERVER_NODE]["root"]
    (cluster.state / "token").write_text(NEW_TOKEN + "\n")
    (server_root / "var/lib/rancher/k3s/server/token").write_text(f"K10cafe::server:{NEW_TOKEN}\n")
    booted = len(cluster.events())
    cluster.token = NEW_TOKEN
    server = cluster.start(SERVER_NODE, OLD)
    _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert cluster.events()[booted:] == [f"start {SERVER_NODE} {OLD}"]
    assert cluster.config_token(SERVER_NODE) == NEW_TOKEN


def test_a_refused_rotation_fails_the_update_and_leaves_the_server_able_to_restart(cluster: TokenCluster) -> None:
    # The server holds a token this stack never made (rotated by hand): K3s answers 401.
    (cluster.state / "token").write_text("0" * 64 + "\n")
    booted = len(cluster.events())
    cluster.token = NEW_TOKEN
    server = cluster.start(SERVER_NODE, OLD)
    _, err = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "K3s refused to rotate the join token (the server keeps the old one" in err
    assert "401" in err
    assert cluster.events()[booted:] == []
    # config.yaml was not touched: what K3s reads on a reboot is what it ran with.
    assert cluster.config_token(SERVER_NODE) == OLD_TOKEN
    assert NEW_TOKEN not in cluster.logs()

