# --- In-place K3s upgrade (rendered into first_boot.sh by edge/first_boot.py) --------------------
# A changed k3sVersion reaches every node as a changed first-boot script through the CustomScript
# extension (the channel: the Hub's VM agent pulls it, nothing connects in). K3s's manual upgrade
# is "replace the binary, restart the service" (docs.k3s.io/upgrades/manual, "Upgrade K3s Using
# the Binary"); around it, one node at a time, server first:
#   server: cordon and drain itself, swap the verified binary, restart, wait Ready at the new
#           version, uncordon; then each agent in name order: cordon and drain it, mark it with
#           $UPGRADE_MARK, wait until it is Ready at the new version, uncordon it;
#   agent:  wait until the server has drained and marked it, swap the binary, restart.
# Agents cannot drain themselves: a kubelet's credentials may not read DaemonSets, which
# `kubectl drain` needs. A failure stops the roll at that node with an error naming it; nodes
# after it are untouched and still run the old version. A rerun resumes: nodes already Ready at
# the new version are skipped.
UPGRADE_DRAIN_SECONDS="@UPGRADE_DRAIN_SECONDS@"
UPGRADE_READY_SECONDS="@UPGRADE_READY_SECONDS@"
UPGRADE_TURN_SECONDS="@UPGRADE_TURN_SECONDS@"
UPGRADE_POLL_SECONDS="${EDGE_UPGRADE_POLL_SECONDS:-5}"
UPGRADE_MARK="edge-training.io/k3s-upgrade-to"
# The server: the agents' node names the stack declares (space separated).
K3S_AGENT_NODES="@K3S_AGENT_NODES@"
# What an agent reads its own Node with: the kubelet's credentials, allowed to get its own node.
AGENT_KUBECONFIG="$ROOT/var/lib/rancher/k3s/agent/kubelet.kubeconfig"

node_name() { hostname; }  # K3s registers the node under the host name (--node-name's default)
node_field() { kubectl get node "$1" -o "jsonpath=$2" 2> /dev/null; }  # node jsonpath
node_version() { node_field "$1" '{.status.nodeInfo.kubeletVersion}'; }
node_ready() { [ "$(node_field "$1" '{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
node_at_version() { node_ready "$1" && [ "$(node_version "$1")" = "$K3S_VERSION" ]; }

# Polls `command...` until it succeeds or `seconds` pass: the one wait of the upgrade.
wait_until() {  # seconds command...
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep "$UPGRADE_POLL_SECONDS"
  done
}

stop_roll() {  # node reason
  fail "K3s upgrade to $K3S_VERSION stopped at node $1: $2. Nodes after it were not touched and still run their version; fix the cause and run pulumi up again to resume"
}

drain_node() {  # node
  kubectl cordon "$1" > /dev/null
  if ! kubectl drain "$1" --ignore-daemonsets --delete-emptydir-data --timeout="${UPGRADE_DRAIN_SECONDS}s" > /dev/null; then
    # Back in service at its old version: the cluster keeps serving while the cause is fixed.
    kubectl uncordon "$1" > /dev/null || true
    stop_roll "$1" "its pods did not leave within ${UPGRADE_DRAIN_SECONDS}s (kubectl drain); it is uncordoned and still runs $(node_version "$1")"
  fi
}

# Installs the binary fetch_verified_k3s left in $work, and restarts K3s on it.
swap_k3s_binary() {  # service
  log "replacing K3s $(k3s_version) with $K3S_VERSION"
  install -m 0755 "$work/k3s" "$K3S_BIN.new"
  mv -f "$K3S_BIN.new" "$K3S_BIN"
  rm -rf "$work"
  work=""
  systemctl restart "$1"
}

# The server, before anything else of this run: itself first.
upgrade_server_node() {
  local me
  me=$(node_name)
  log "upgrading node $me (server) to K3s $K3S_VERSION"
  fetch_verified_k3s  # before the node leaves service: a bad download stops nothing that runs
  drain_node "$me"
  # Marked like an agent: a rerun after a failure below knows this cordon is the upgrade's.
  kubectl annotate --overwrite node "$me" "$UPGRADE_MARK=$K3S_VERSION" > /dev/null
  swap_k3s_binary k3s
  wait_until "$UPGRADE_READY_SECONDS" node_at_version "$me" ||
    stop_roll "$me" "not Ready at $K3S_VERSION within ${UPGRADE_READY_SECONDS}s; it stays cordoned (journalctl -u k3s)"
  finish_node_upgrade "$me"
}

# Puts a node the upgrade cordoned back in service, once it is Ready at the new version.
finish_node_upgrade() {  # node
  node_at_version "$1" || return 0
  [ -n "$(node_field "$1" "{.metadata.annotations.edge-training\\.io/k3s-upgrade-to}")" ] || return 0
  kubectl uncordon "$1" > /dev/null
  kubectl annotate node "$1" "$UPGRADE_MARK-" > /dev/null
}

# Scale down: a node whose VM left the stack (hubAgentCount lowered) is drained and deleted from
# the cluster. The server's extension runs this as an update, and Pulumi deletes the VMs of removed
# resources only after every update succeeded, so the node is gone before its VM is.
remove_departed_agents() {
  local me node
  me=$(node_name)
  for node in $(kubectl get nodes -o 'jsonpath={.items[*].metadata.name}' | tr ' ' '\n' | sort); do
    [ "$node" != "$me" ] || continue
    case " $K3S_AGENT_NODES " in *" $node "*) continue ;; esac
    log "removing node $node: its VM is no longer in the stack"
    kubectl cordon "$node" > /dev/null
    kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout="${UPGRADE_DRAIN_SECONDS}s" > /dev/null ||
      fail "scale-down stopped at node $node: its pods did not leave within ${UPGRADE_DRAIN_SECONDS}s (kubectl drain); it stays cordoned and its VM is not deleted. Run pulumi up again once its pods can move"
    kubectl delete node "$node" > /dev/null
  done
}

# The server, once it runs the new version: each agent in turn, skipping those already there.
roll_agents() {
  local me node
  me=$(node_name)
  finish_node_upgrade "$me"  # a run that stopped after the server's swap left it cordoned
  remove_departed_agents
  for node in $(kubectl get nodes -o 'jsonpath={.items[*].metadata.name}' | tr ' ' '\n' | sort); do
    [ "$node" != "$me" ] || continue
    if [ "$(node_version "$node")" = "$K3S_VERSION" ]; then
      # Done, perhaps by a run that stopped before it could put the node back (a node that only
      # joined, not yet Ready, is left alone).
      finish_node_upgrade "$node"
      continue
    fi
    log "upgrading node $node (agent) to K3s $K3S_VERSION"
    drain_node "$node"
    kubectl annotate --overwrite node "$node" "$UPGRADE_MARK=$K3S_VERSION" > /dev/null
    wait_until "$UPGRADE_READY_SECONDS" node_at_version "$node" ||
      stop_roll "$node" "not Ready at $K3S_VERSION within ${UPGRADE_READY_SECONDS}s after it was drained; it stays cordoned (on it: journalctl -u k3s-agent)"
    finish_node_upgrade "$node"
  done
}

marked_for_upgrade() {  # node
  [ "$(KUBECONFIG="$AGENT_KUBECONFIG" node_field "$1" "{.metadata.annotations.edge-training\\.io/k3s-upgrade-to}")" = "$K3S_VERSION" ]
}

# An agent: wait for the server to drain and mark this node, then swap and restart.
upgrade_agent_node() {
  local me
  me=$(node_name)
  fetch_verified_k3s
  log "node $me waits for the server to drain it for K3s $K3S_VERSION"
  wait_until "$UPGRADE_TURN_SECONDS" marked_for_upgrade "$me" ||
    stop_roll "$me" "the server did not drain it for the upgrade within ${UPGRADE_TURN_SECONDS}s (see the server's first-boot extension)"
  swap_k3s_binary k3s-agent
}
