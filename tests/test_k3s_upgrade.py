"""The in-place K3s upgrade (edge/k3s_upgrade.sh), run for real: a server and two agents, each a
throwaway root with its own stubs, sharing one stand-in cluster.

The stand-in cluster is directories of node state (version, Ready, cordoned, the upgrade mark)
that kubectl reads and changes, and that starting K3s (the installer, `systemctl restart`) sets
from the binary actually installed on that node. It refuses like the real thing: a kubelet's
credentials (the agent's kubeconfig) may read only its own Node, and a drain whose pods do not
leave fails with kubectl's own timeout error. Every step is logged in order in one event log.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edge import first_boot, k3s_releases
from tests.test_first_boot import PRELUDE, STUBS, make_system, systemctl_stub
from tests.test_k3s_first_boot import AGENT, HELM, SERVER, _helm_tarball, sha256

OLD, NEW = "v1.35.4+k3s1", "v1.36.2+k3s1"
SERVER_NODE = "vm-edge-dev"
AGENT_NODES = ("vm-agent1-edge-dev", "vm-agent2-edge-dev")

# Registers (or re-registers) this host's node at the version of the binary installed here.
REGISTER = r"""node="$CLUSTER/nodes/$FAKE_HOSTNAME"; mkdir -p "$node"
"$EDGE_BOOTSTRAP_ROOT/usr/local/bin/k3s" --version | awk 'NR == 1 { print $3 }' > "$node/version"
if [ -e "$node/broken" ]; then echo False > "$node/ready"; else echo True > "$node/ready"; fi
echo "start $FAKE_HOSTNAME $(cat "$node/version")" >> "$CLUSTER/events"
"""

SYSTEMCTL = systemctl_stub(REGISTER)

KUBECTL = r"""echo "kubectl $*" >> "$STATE/calls"
nodes="$CLUSTER/nodes"
# A kubelet's credentials: its own Node, read only (the Node authorizer).
if [ "${KUBECONFIG##*/}" = kubelet.kubeconfig ]; then
  [ "$1 $2 $3" = "get node $FAKE_HOSTNAME" ] ||
    { echo "Error from server (Forbidden): system:node:$FAKE_HOSTNAME cannot $1 $2 $3" >&2; exit 1; }
fi
case "$1" in
  wait)
    for n in "$nodes"/*; do [ "$(cat "$n/ready")" = True ] || exit 1; done ;;
  apply|create|annotate|cordon|uncordon|drain|delete) ;;
  get)
    case "$2" in
      -f) [ -f "$STATE/secret-created" ]; exit ;;
      crd) exit 1 ;;
      nodes) (cd "$nodes" && ls | tr '\n' ' '); exit ;;
      node)
        n="$nodes/$3"; [ -d "$n" ] || { echo "Error from server (NotFound): nodes \"$3\" not found" >&2; exit 1; }
        case "$*" in
          *kubeletVersion*) cat "$n/version" ;;
          *Ready*) cat "$n/ready" ;;
          *unschedulable*) [ ! -e "$n/cordoned" ] || echo true ;;
          *k3s-upgrade-to*) cat "$n/mark" 2>/dev/null || true ;;
        esac
        exit ;;
    esac ;;
esac
case "$1" in
  create) touch "$STATE/secret-created" ;;
  cordon) touch "$nodes/$2/cordoned"; echo "cordon $2" >> "$CLUSTER/events" ;;
  uncordon) rm -f "$nodes/$2/cordoned"; echo "uncordon $2" >> "$CLUSTER/events" ;;
  drain)
    [ -e "$nodes/$2/cordoned" ] || { echo "drain of an uncordoned node" >&2; exit 1; }
    for arg; do case "$arg" in --timeout=*) timeout=${arg#--timeout=} ;; esac; done
    if [ -e "$nodes/$2/drain-stuck" ]; then
      echo "error: unable to drain node \"$2\" due to error: global timeout reached: $timeout" >&2; exit 1
    fi
    echo "drain $2" >> "$CLUSTER/events" ;;
  delete) rm -rf "${nodes:?}/$3"; echo "delete $3" >> "$CLUSTER/events" ;;
  annotate)  # annotate [--overwrite] node NAME KEY=VALUE | KEY-
    set -- $(for arg; do case "$arg" in --*) ;; *) echo "$arg" ;; esac; done)
    case "$4" in
      *-) rm -f "$nodes/$3/mark" ;;
      *=*) echo "${4#*=}" > "$nodes/$3/mark"; echo "mark $3" >> "$CLUSTER/events" ;;
    esac ;;
esac
"""


def k3s_binary(version: str) -> bytes:
    return ("#!/bin/sh\n" + PRELUDE + f'[ "$1" != --version ] || echo "k3s version {version} (01b6f04a)"\n').encode()


INSTALLER = (
    "#!/bin/sh\n"
    + PRELUDE
    + r"""echo "install.sh $*" >> "$STATE/calls"
service=k3s; [ "$1" = server ] || service="k3s-$1"
touch "$STATE/enabled.$service" "$STATE/active.$service"
"""
    + REGISTER
)


class Cluster:
    """The three nodes, their shared cluster state and the release fixtures the curl stub serves."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.state = tmp_path / "cluster"
        (self.state / "nodes").mkdir(parents=True)
        (self.state / "events").touch()
        self.fixtures = tmp_path / "fixtures"
        self.fixtures.mkdir()
        (self.fixtures / "install.sh").write_text(INSTALLER)
        (self.fixtures / "helm-v3.18.6-linux-amd64.tar.gz").write_bytes(_helm_tarball(tmp_path))
        stubs = {**STUBS, "kubectl": KUBECTL, "systemctl": SYSTEMCTL, "hostname": 'echo "$FAKE_HOSTNAME"\n'}
        self.systems = {
            name: make_system(tmp_path / name, {**stubs, "helm": HELM}) for name in (SERVER_NODE, *AGENT_NODES)
        }
        installer = sha256(INSTALLER.encode())
        self.releases = {v: k3s_releases.K3sRelease(v, sha256(k3s_binary(v)), installer) for v in (OLD, NEW)}
        monkeypatch.setattr(k3s_releases, "RELEASES", self.releases)
        # The stand-in answers at once, so a node is Ready as soon as K3s restarts: a short deadline
        # is reached only by a node that never comes back. An agent's turn comes after every node
        # before it, however loaded the machine: long, except in tests where no turn comes.
        monkeypatch.setattr(first_boot, "UPGRADE_READY_SECONDS", 2)
        self.monkeypatch = monkeypatch
        self.turn_seconds = 120

    def serve(self, version: str) -> None:
        """The release's assets where the curl stub finds them."""
        binary = k3s_binary(version)
        (self.fixtures / "k3s").write_bytes(binary)
        (self.fixtures / "sha256sum-amd64.txt").write_text(f"{sha256(binary)}  k3s\n")

    def script(self, node: str, version: str, agents: tuple[str, ...] = AGENT_NODES) -> str:
        server = first_boot.K3sServer(SERVER.join_token, SERVER.arc, SERVER.manifests_yaml, agent_nodes=agents)
        role = {"server": server} if node == SERVER_NODE else {"agent": AGENT}
        self.monkeypatch.setattr(first_boot, "UPGRADE_TURN_SECONDS", self.turn_seconds)
        script = first_boot.render_script("azureuser", "27.5.1", k3s=self.releases[version], **role)
        helm = sha256((self.fixtures / "helm-v3.18.6-linux-amd64.tar.gz").read_bytes())
        return script.replace(first_boot.HELM_SHA256, helm)

    def start(self, node: str, version: str, agents: tuple[str, ...] = AGENT_NODES) -> subprocess.Popen[str]:
        system = self.systems[node]
        path = system["root"].parent / "first-boot.sh"
        path.write_text(self.script(node, version, agents))
        env = {
            "PATH": f"{system['stubs']}:/usr/bin:/bin",
            "EDGE_BOOTSTRAP_ROOT": str(system["root"]),
            "STATE": str(system["state"]),
            "FIXTURES": str(self.fixtures),
            "FAKE_KEY_FINGERPRINT": "9DC858229FC7DD38854AE2D88D81803C0EBFCD88",
            "HOME": str(system["root"]),
            "CLUSTER": str(self.state),
            "FAKE_HOSTNAME": node,
            "EDGE_UPGRADE_POLL_SECONDS": "0.2",
        }
        return subprocess.Popen(["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def boot(self, version: str) -> None:
        """First boot of every node at `version`, server first, as a new cluster comes up."""
        self.serve(version)
        for node in (SERVER_NODE, *AGENT_NODES):
            process = self.start(node, version)
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err

    def roll(self, version: str) -> dict[str, tuple[int, str]]:
        """Every node's extension runs the changed script at once, as Pulumi updates them."""
        self.serve(version)
        agents = {node: self.start(node, version) for node in AGENT_NODES}
        server = self.start(SERVER_NODE, version)
        results = {}
        for node, process in {SERVER_NODE: server, **agents}.items():
            _, err = process.communicate(timeout=60)
            results[node] = (process.returncode, err)
        return results

    def node(self, name: str, what: str) -> str:
        path = self.state / "nodes" / name / what
        return path.read_text().strip() if path.exists() else ""

    def cordoned(self, name: str) -> bool:
        return (self.state / "nodes" / name / "cordoned").exists()

    def events(self) -> list[str]:
        return (self.state / "events").read_text().splitlines()

    def installed(self, node: str) -> bytes:
        return (self.systems[node]["root"] / "usr/local/bin/k3s").read_bytes()


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    cluster = Cluster(tmp_path, monkeypatch)
    cluster.boot(OLD)
    return cluster


def _cordoned_at_once(events: list[str]) -> int:
    cordoned: set[str] = set()
    most = 0
    for event in events:
        verb, _, node = event.partition(" ")
        if verb == "cordon":
            cordoned.add(node)
        elif verb == "uncordon":
            cordoned.discard(node.split()[0])
        most = max(most, len(cordoned))
    return most


def test_an_upgrade_rolls_the_server_then_each_agent_one_node_at_a_time(cluster: Cluster) -> None:
    (cluster.systems[SERVER_NODE]["root"] / "var/cache/edge-training").mkdir(parents=True)
    (cluster.systems[SERVER_NODE]["root"] / "var/cache/edge-training/staged.csv").write_text("rows\n")
    booted = len(cluster.events())
    results = cluster.roll(NEW)
    assert all(code == 0 for code, _ in results.values()), results
    events = cluster.events()[booted:]
    expected = []
    for node in (SERVER_NODE, *AGENT_NODES):
        expected += [f"cordon {node}", f"drain {node}"]
        expected += [f"mark {node}", f"start {node} {NEW}"]
        expected += [f"uncordon {node}"]
    assert events == expected
    assert _cordoned_at_once(events) == 1
    for node in (SERVER_NODE, *AGENT_NODES):
        assert cluster.node(node, "version") == NEW and cluster.node(node, "ready") == "True"
        assert not cluster.cordoned(node) and cluster.node(node, "mark") == ""
        assert cluster.installed(node) == k3s_binary(NEW)
        # Only the binary changed hands: the installer did not run again.
        calls = (cluster.systems[node]["state"] / "calls").read_text().splitlines()
        assert calls.count(f"install.sh {'server' if node == SERVER_NODE else 'agent'}") == 1
    assert (cluster.systems[SERVER_NODE]["root"] / "var/cache/edge-training/staged.csv").read_text() == "rows\n"
    # Agents read their own Node with the kubelet's credentials, and nothing else.
    for agent in AGENT_NODES:
        calls = [c for c in (cluster.systems[agent]["state"] / "calls").read_text().splitlines() if "kubectl" in c]
        assert calls and all(c.startswith(f"kubectl get node {agent} ") for c in calls), calls
    # Nothing left to do: a second run touches no node.
    results = cluster.roll(NEW)
    assert all(code == 0 for code, _ in results.values()), results
    assert cluster.events()[booted + len(expected) :] == []


def test_a_drain_that_times_out_stops_the_roll_at_that_node_and_a_rerun_resumes(cluster: Cluster) -> None:
    stuck = AGENT_NODES[0]
    (cluster.state / "nodes" / stuck / "drain-stuck").touch()
    booted = len(cluster.events())
    cluster.turn_seconds = 3  # no turn comes: the server stops at the first agent
    results = cluster.roll(NEW)
    code, err = results[SERVER_NODE]
    assert code != 0
    assert f"K3s upgrade to {NEW} stopped at node {stuck}: its pods did not leave within 600s" in err
    assert f"still runs {OLD}" in err
    # The cluster still serves: the stuck node is back in service at its old version, the one
    # after it was never touched, the server runs the new version.
    assert cluster.node(stuck, "version") == OLD and not cluster.cordoned(stuck)
    assert cluster.node(AGENT_NODES[1], "version") == OLD
    assert not [e for e in cluster.events()[booted:] if e.endswith(AGENT_NODES[1])]
    assert cluster.node(SERVER_NODE, "version") == NEW
    # Each waiting agent gives up with an error naming itself, and its binary is unchanged.
    for agent in AGENT_NODES:
        code, err = results[agent]
        assert code != 0 and f"stopped at node {agent}: the server did not drain it" in err
        assert cluster.installed(agent) == k3s_binary(OLD)

    (cluster.state / "nodes" / stuck / "drain-stuck").unlink()
    cluster.turn_seconds = 120
    resumed = len(cluster.events())
    results = cluster.roll(NEW)
    assert all(code == 0 for code, _ in results.values()), results
    events = cluster.events()[resumed:]
    assert not [e for e in events if e.endswith(SERVER_NODE)]  # done before: not drained again
    assert [e.split()[0] for e in events if e.split()[1] == stuck] == ["cordon", "drain", "mark", "start", "uncordon"]
    assert all(cluster.node(n, "version") == NEW for n in (SERVER_NODE, *AGENT_NODES))


def test_a_server_that_does_not_come_back_ready_stops_before_any_agent(cluster: Cluster) -> None:
    (cluster.state / "nodes" / SERVER_NODE / "broken").touch()
    cluster.turn_seconds = 3  # no turn comes
    booted = len(cluster.events())
    results = cluster.roll(NEW)
    code, err = results[SERVER_NODE]
    assert code != 0
    assert f"stopped at node {SERVER_NODE}: not Ready at {NEW} within 2s; it stays cordoned" in err
    assert [e for e in cluster.events()[booted:] if any(e.endswith(a) for a in AGENT_NODES)] == []
    assert all(cluster.node(a, "version") == OLD for a in AGENT_NODES)
    assert cluster.cordoned(SERVER_NODE)

    # K3s comes back (the operator fixed it): the rerun puts the server in service and goes on.
    (cluster.state / "nodes" / SERVER_NODE / "broken").unlink()
    (cluster.state / "nodes" / SERVER_NODE / "ready").write_text("True\n")
    cluster.turn_seconds = 120
    resumed = len(cluster.events())
    results = cluster.roll(NEW)
    assert all(code == 0 for code, _ in results.values()), results
    events = cluster.events()[resumed:]
    assert events[0] == f"uncordon {SERVER_NODE}" and f"drain {SERVER_NODE}" not in events
    assert not cluster.cordoned(SERVER_NODE) and cluster.node(SERVER_NODE, "mark") == ""
    assert all(cluster.node(a, "version") == NEW for a in AGENT_NODES)


def test_a_download_that_fails_its_checksum_stops_the_roll_before_any_node_leaves_service(cluster: Cluster) -> None:
    booted = len(cluster.events())
    cluster.serve(NEW)
    (cluster.fixtures / "k3s").write_bytes(k3s_binary(NEW) + b"# tampered\n")
    (cluster.fixtures / "sha256sum-amd64.txt").write_text(f"{cluster.releases[NEW].sha256}  k3s\n")
    server = cluster.start(SERVER_NODE, NEW)
    _, err = server.communicate(timeout=60)
    assert server.returncode != 0 and f"K3s {NEW} has SHA-256" in err
    assert cluster.events()[booted:] == []
    assert cluster.node(SERVER_NODE, "version") == OLD and cluster.installed(SERVER_NODE) == k3s_binary(OLD)


def test_scaling_down_drains_and_deletes_the_departed_node_and_keeps_the_others(cluster: Cluster) -> None:
    booted = len(cluster.events())
    server = cluster.start(SERVER_NODE, OLD, agents=AGENT_NODES[:1])
    _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    gone = AGENT_NODES[1]
    assert cluster.events()[booted:] == [f"cordon {gone}", f"drain {gone}", f"delete {gone}"]
    assert not (cluster.state / "nodes" / gone).exists()
    assert cluster.node(AGENT_NODES[0], "version") == OLD and not cluster.cordoned(AGENT_NODES[0])


def test_a_departed_node_whose_pods_do_not_leave_stops_the_update_before_its_vm_goes(cluster: Cluster) -> None:
    gone = AGENT_NODES[1]
    (cluster.state / "nodes" / gone / "drain-stuck").touch()
    server = cluster.start(SERVER_NODE, OLD, agents=AGENT_NODES[:1])
    _, err = server.communicate(timeout=60)
    assert server.returncode != 0
    assert f"scale-down stopped at node {gone}: its pods did not leave within 600s" in err
    # The failed extension fails `pulumi up` before Pulumi deletes anything: the node and its VM stay.
    assert (cluster.state / "nodes" / gone).exists() and cluster.cordoned(gone)
