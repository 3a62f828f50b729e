#!/usr/bin/env bash
# First boot of an edge VM. Always: Docker Engine from Docker's apt repository at a pinned version
# (on-premises serving), the admin user in the docker group, Docker running. With a K3s role:
# - server: K3s at a pinned, checksum-verified version; Helm, pinned and verified; the Azure Arc
#   agents (chart azure-arc-k8sagents, pinned) onboarded with a key that only ever sits in a 0600
#   file on tmpfs and is deleted once the agents run; the compute namespace, credential and cache
#   volumes applied; a systemd unit that applies the InstanceTypes once the Azure ML extension has
#   installed their CRD; a marker when the cluster is ready.
# - agent: K3s at the same version, joining the server.
# On an NCv3 size (NVIDIA V100), in every role, the GPU stack of first_boot_gpu.sh: driver,
# container toolkit, Docker's and containerd's NVIDIA runtime, and a pod that must see the GPUs.
# A node that runs K3s at another version is upgraded in place, one node at a time, and the
# server removes nodes whose VMs left the stack (k3s_upgrade.sh, rendered in below).
# Then a marker the attach step waits for, written last.
# Idempotent: every step checks before it changes anything, so a second run changes nothing.
# Run by cloud-init (runcmd) or by the CustomScript extension; edge/first_boot.py fills in the
# values below (all validated there or in components/config.py). Secrets (the K3s join token, the
# Arc onboarding key) are only in the heredocs of the write_* functions, which write them to 0600
# files from within this shell (and, to rotate the join token, curl's options on stdin): never in
# a command line, an environment or a log line.
set -euo pipefail

ADMIN_USER="@ADMIN_USER@"
DOCKER_VERSION="@DOCKER_VERSION@"
# Docker's release signing key, as published in Docker's install guide for Ubuntu.
DOCKER_KEY_FINGERPRINT="9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
# Tests run the script against a throwaway root; on the VM it is /.
ROOT="${EDGE_BOOTSTRAP_ROOT:-}"
KEYRING="$ROOT/etc/apt/keyrings/docker.asc"
SOURCES="$ROOT/etc/apt/sources.list.d/docker.list"
MARKER="$ROOT/var/lib/edge-training/first-boot-done"

# K3s: "none" keeps the VM Docker-only (the virtual-machine compute mode).
K3S_ROLE="@K3S_ROLE@"
K3S_VERSION="@K3S_VERSION@"
K3S_SHA256="@K3S_SHA256@"
K3S_INSTALLER_SHA256="@K3S_INSTALLER_SHA256@"
HELM_VERSION="@HELM_VERSION@"
HELM_SHA256="@HELM_SHA256@"
ARC_CHART="@ARC_CHART@"
ARC_CHART_VERSION="@ARC_CHART_VERSION@"
# true: any deployed chart is kept (Azure upgrades the agents); false: exactly ARC_CHART_VERSION.
ARC_AUTO_UPGRADE="@ARC_AUTO_UPGRADE@"
# SHA-256 of the onboarding key (not the key): a rotated key installs the agents again.
ARC_KEY_FINGERPRINT="@ARC_KEY_FINGERPRINT@"
ARC_KEY_INSTALLED="$ROOT/var/lib/edge-training/arc-onboarding-key.sha256"
FIRST_BOOT_LOCK="$ROOT/run/edge-training-first-boot.lock"
ARC_NAMESPACE="azure-arc-release"
K3S_BIN="$ROOT/usr/local/bin/k3s"
K3S_CONFIG="$ROOT/etc/rancher/k3s/config.yaml"
# Written by the K3s server: its token as K10<CA hash>::server:<password>, and the CA of :6443.
K3S_SERVER_TOKEN="$ROOT/var/lib/rancher/k3s/server/token"
K3S_SERVER_CA="$ROOT/var/lib/rancher/k3s/server/tls/server-ca.crt"
HELM_BIN="$ROOT/usr/local/bin/helm"
MANIFESTS="$ROOT/etc/edge-training/manifests"
STATE_DIR="$ROOT/var/lib/edge-training"
CLUSTER_READY="$STATE_DIR/cluster-ready"
# On tmpfs: the onboarding key never reaches a disk through this script.
ARC_VALUES_DIR="$ROOT/run/edge-training"
ARC_VALUES=""
INSTANCE_TYPES_UNIT="edge-training-instance-types.service"
INSTANCE_TYPES_SCRIPT="$ROOT/opt/edge-training/apply-instance-types.sh"
# K3s installs kubectl there; appended so nothing earlier on PATH is shadowed.
export PATH="$PATH:/usr/local/bin"
export KUBECONFIG="$ROOT/etc/rancher/k3s/k3s.yaml"
export HOME="${HOME:-/root}"  # Helm keeps its cache under $HOME; runcmd may not set it.

work=""
cleanup() {
  # Whatever happened, the onboarding key does not outlive the script.
  if [ -n "$ARC_VALUES" ]; then rm -f "$ARC_VALUES"; fi
  rm -f "$ARC_VALUES_DIR/k3s-config.yaml"  # the wanted join token, staged by rotate_join_token
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

log() { echo "edge-first-boot: $*"; }
fail() { echo "edge-first-boot: $*" >&2; exit 1; }
is_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

sha256_of() { sha256sum "$1" | awk '{ print $1 }'; }
fetch() { curl -fsSL --proto '=https' --retry 5 --retry-connrefused -o "$2" "$1"; }
verify_sha256() {  # file expected description
  local actual
  actual=$(sha256_of "$1")
  [ "$actual" = "$2" ] || fail "$3 has SHA-256 $actual, expected $2"
}

# Writes stdin to a root-only file, unless it already holds exactly that. Everything runs in
# this shell (read, printf are builtins): the content reaches no command line and no environment.
write_private() {  # path
  local content
  IFS= read -r -d '' content || true
  if [ -f "$1" ] && [ "$(< "$1")" = "${content%$'\n'}" ]; then
    [ "$(stat -c %a "$1")" = 600 ] || chmod 0600 "$1"
    return 1  # unchanged
  fi
  mkdir -p "$(dirname "$1")"
  (umask 077 && printf '%s' "$content" > "$1.new")
  mv -f "$1.new" "$1"
}

@SECRETS@
@GPU_FUNCTIONS@

k3s_version() { if [ -x "$K3S_BIN" ]; then "$K3S_BIN" --version 2>/dev/null | awk 'NR == 1 { print $3 }'; fi; }
helm_version() { if [ -x "$HELM_BIN" ]; then "$HELM_BIN" version --template '{{.Version}}' 2>/dev/null; fi; }

# cloud-init and the CustomScript extension may both run first boot on a new VM: one at a time.
hold_first_boot_lock() {
  mkdir -p "$(dirname "$FIRST_BOOT_LOCK")"
  exec 9>> "$FIRST_BOOT_LOCK"  # appending: a rerun leaves the file as it was
  flock 9
}

# Downloads K3s $K3S_VERSION and its installer into $work, each checked against its pinned SHA-256.
fetch_verified_k3s() {
  work=$(mktemp -d)
  local release="https://github.com/k3s-io/k3s/releases/download/${K3S_VERSION//+/%2B}"
  fetch "$release/k3s" "$work/k3s"
  fetch "$release/sha256sum-amd64.txt" "$work/sha256sum-amd64.txt"
  fetch "https://raw.githubusercontent.com/k3s-io/k3s/${K3S_VERSION//+/%2B}/install.sh" "$work/install.sh"
  local published
  published=$(awk '$2 == "k3s" { print $1 }' "$work/sha256sum-amd64.txt")
  [ "$published" = "$K3S_SHA256" ] ||
    fail "the release's sha256sum-amd64.txt lists '$published' for k3s, pinned $K3S_SHA256"
  verify_sha256 "$work/k3s" "$K3S_SHA256" "K3s $K3S_VERSION"
  verify_sha256 "$work/install.sh" "$K3S_INSTALLER_SHA256" "K3s's install.sh at $K3S_VERSION"
}

# The token in config.yaml (stdin); builtins only, in this shell: it reaches no command line.
config_token() {
  local line
  while IFS= read -r line; do
    case "$line" in "token: "*) line=${line#token: }; line=${line#\'}; printf '%s' "${line%\'}"; return 0 ;; esac
  done
  return 1
}

# The password the running server accepts as `server` (and, with no agent token, as `node`).
server_token_password() {
  local line=""
  IFS= read -r line < "$K3S_SERVER_TOKEN" || [ -n "$line" ] || return 1
  line=${line#K10*::}
  printf '%s' "${line#server:}"
}

# A new join token (k3sJoinTokenRotation) reaches a running server only through K3s's own
# rotation, which re-encrypts the bootstrap data (pkg/server/handlers/token.go); a server merely
# restarted with another token refuses to start. `k3s token rotate` takes the new token only as
# --new-token on its command line, so this sends the request that command sends (PUT
# /v1-k3s/token, {"newToken": ...}, as `server` with the current token) through curl, whose
# options come on stdin. Resumable: the server's own token file says what it accepts now.
rotate_join_token() {
  local staged="$ARC_VALUES_DIR/k3s-config.yaml" wanted current
  [ -f "$K3S_SERVER_TOKEN" ] || return 0  # never started: it takes the token from config.yaml
  mkdir -p "$ARC_VALUES_DIR"
  write_k3s_config "$staged" || true
  wanted=$(config_token < "$staged") || fail "no token in the rendered K3s config"
  rm -f "$staged"
  current=$(server_token_password) || fail "cannot read the K3s server's token ($K3S_SERVER_TOKEN)"
  [ "$current" != "$wanted" ] || return 0
  # Hex from the provider; anything else could break the quoting below.
  [[ $wanted =~ ^[0-9A-Za-z]+$ ]] || fail "the new K3s join token is not alphanumeric: not rotated"
  log "rotating the K3s join token on the running server"
  curl --config - <<EOF || fail "K3s refused to rotate the join token (the server keeps the old one; see: journalctl -u k3s)"
url = "https://127.0.0.1:6443/v1-k3s/token"
request = "PUT"
proto = "=https"
cacert = "$K3S_SERVER_CA"
user = "server:$current"
header = "Content-Type: application/json"
data = "{\"newToken\":\"$wanted\"}"
fail
silent
show-error
max-time = 60
EOF
}

@K3S_UPGRADE@

install_k3s() {
  local service=k3s config_changed=false
  [ "$K3S_ROLE" = server ] || service=k3s-agent
  if [ "$K3S_ROLE" = server ]; then rotate_join_token; fi
  # The token lives in K3s's own config file (0600), not in the installer's environment, which
  # the installer would copy into the unit's environment file.
  if write_k3s_config "$K3S_CONFIG"; then config_changed=true; log "wrote $K3S_CONFIG"; fi
  if [ -n "$(k3s_version)" ] && [ "$(k3s_version)" != "$K3S_VERSION" ]; then
    "upgrade_${K3S_ROLE}_node"  # in place, one node at a time (k3s_upgrade.sh)
  elif [ "$(k3s_version)" != "$K3S_VERSION" ]; then
    log "installing K3s $K3S_VERSION ($K3S_ROLE; found '$(k3s_version)')"
    fetch_verified_k3s
    install -D -m 0755 "$work/k3s" "$K3S_BIN"
    # The installer at the same tag writes the systemd unit and the kubectl/crictl links, and
    # starts K3s; it uses the verified binary instead of downloading one.
    INSTALL_K3S_SKIP_DOWNLOAD=true sh "$work/install.sh" "$K3S_ROLE"
    rm -rf "$work"
    work=""
  elif [ "$config_changed" = true ]; then
    systemctl restart "$service"
  fi
  systemctl is-enabled --quiet "$service" || systemctl enable "$service"
  systemctl is-active --quiet "$service" || systemctl start "$service"
}

wait_for_node() {
  local deadline=$((SECONDS + 600))
  # `kubectl wait` fails at once while the node has not registered yet, so retry until the deadline.
  until kubectl wait --for=condition=Ready node --all --timeout=60s > /dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the K3s node was not Ready within 600s (see: journalctl -u k3s)"
    sleep 5
  done
}

apply_manifests() {
  local applied="$STATE_DIR/manifests.sha256" wanted
  write_manifests "$MANIFESTS" || true
  wanted=$(cat "$MANIFESTS"/*.yaml | sha256sum | awk '{ print $1 }')
  [ "$(cat "$applied" 2>/dev/null)" != "$wanted" ] || return 0
  log "applying the compute namespace and its volumes"
  kubectl apply -f "$MANIFESTS/cluster.yaml"
  # Created once and never applied again: the operator fills the Secret in the cluster, and a
  # later apply of the empty one would wipe the credential.
  if grep -q '^kind:' "$MANIFESTS/create-once.yaml"; then
    kubectl get -f "$MANIFESTS/create-once.yaml" -o name > /dev/null 2>&1 ||
      kubectl create -f "$MANIFESTS/create-once.yaml"
  fi
  mkdir -p "$STATE_DIR"
  echo "$wanted" > "$applied"
}

install_helm() {
  [ "$(helm_version)" != "$HELM_VERSION" ] || return 0
  log "installing Helm $HELM_VERSION (found '$(helm_version)')"
  work=$(mktemp -d)
  fetch "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz" "$work/helm.tar.gz"
  verify_sha256 "$work/helm.tar.gz" "$HELM_SHA256" "Helm $HELM_VERSION"
  tar -xzf "$work/helm.tar.gz" -C "$work" linux-amd64/helm
  install -D -m 0755 "$work/linux-amd64/helm" "$HELM_BIN"
  rm -rf "$work"
  work=""
}

arc_agents_deployed() {
  local chart="azure-arc-k8sagents-$ARC_CHART_VERSION"
  # With auto-upgrade on, Azure moves the chart on: any version counts, and none is forced back.
  [ "$ARC_AUTO_UPGRADE" = false ] || chart="azure-arc-k8sagents-"
  [ "$(cat "$ARC_KEY_INSTALLED" 2>/dev/null)" = "$ARC_KEY_FINGERPRINT" ] || return 1
  # Helm's JSON is compact; no `grep -q`, whose early exit would fail the pipe under pipefail.
  "$HELM_BIN" list --namespace "$ARC_NAMESPACE" --filter '^azure-arc$' --deployed --output json 2> /dev/null |
    grep -F "\"chart\":\"$chart" > /dev/null
}

# The chart version of the deployed azure-arc release, if any.
arc_deployed_version() {
  "$HELM_BIN" list --namespace "$ARC_NAMESPACE" --filter '^azure-arc$' --deployed --output json 2> /dev/null |
    sed -n 's/.*"chart":"azure-arc-k8sagents-\([0-9.]*\)".*/\1/p'
}

install_arc_agents() {
  if arc_agents_deployed; then return 0; fi
  local version="$ARC_CHART_VERSION" deployed
  # Auto-upgraded agents given a rotated key keep the version Azure moved them to.
  deployed=$(arc_deployed_version)
  if [ "$ARC_AUTO_UPGRADE" = true ] && [ -n "$deployed" ]; then version=$deployed; fi
  log "installing the Azure Arc agents (chart azure-arc-k8sagents $version)"
  mkdir -p "$ARC_VALUES_DIR"
  chmod 0700 "$ARC_VALUES_DIR"
  ARC_VALUES="$ARC_VALUES_DIR/arc-onboarding-values.json"
  write_arc_values "$ARC_VALUES" || true
  # The values az connectedk8s connect sets, from a file: the onboarding key is in no argument.
  # --wait: the agents are running when this returns, so the key is no longer needed.
  "$HELM_BIN" upgrade --install azure-arc "$ARC_CHART" --version "$version" \
    --namespace "$ARC_NAMESPACE" --create-namespace --values "$ARC_VALUES" --wait --timeout 600s
  rm -f "$ARC_VALUES"
  ARC_VALUES=""
  mkdir -p "$STATE_DIR"
  echo "$ARC_KEY_FINGERPRINT" > "$ARC_KEY_INSTALLED"
}

install_instance_types_unit() {
  local unit="$ROOT/etc/systemd/system/$INSTANCE_TYPES_UNIT" changed=false wanted
  local requested="$STATE_DIR/instance-types.sha256"
  if write_instance_types_script "$INSTANCE_TYPES_SCRIPT"; then changed=true; fi
  if write_instance_types_unit "$unit"; then changed=true; fi
  if [ "$changed" = true ]; then
    systemctl daemon-reload
    systemctl enable "$INSTANCE_TYPES_UNIT"
  fi
  # (Re)started for each new list of instance types; on first boot it just starts, and waits.
  wanted=$(sha256_of "$MANIFESTS/instance-types.yaml")
  if [ "$changed" = true ] || [ "$(cat "$requested" 2>/dev/null)" != "$wanted" ]; then
    systemctl restart --no-block "$INSTANCE_TYPES_UNIT"
    echo "$wanted" > "$requested"
  fi
}

hold_first_boot_lock
# shellcheck source=/dev/null
. "$ROOT/etc/os-release"
arch=$(dpkg --print-architecture)
export DEBIAN_FRONTEND=noninteractive

configure_edge_network  # the operator's CAs and proxy, before anything is fetched (edge/real_edge.py)

missing=()
for pkg in ca-certificates curl gnupg; do
  is_installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

if [ ! -s "$KEYRING" ]; then
  log "fetching Docker's signing key"
  key=$(mktemp)
  curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o "$key"
  fingerprint=$(gpg --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" { print $10; exit }')
  if [ "$fingerprint" != "$DOCKER_KEY_FINGERPRINT" ]; then
    echo "edge-first-boot: Docker's key has fingerprint '$fingerprint', expected $DOCKER_KEY_FINGERPRINT" >&2
    rm -f "$key"
    exit 1
  fi
  install -D -m 0644 "$key" "$KEYRING"
  rm -f "$key"
fi

source_line="deb [arch=$arch signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu $VERSION_CODENAME stable"
if [ "$(cat "$SOURCES" 2>/dev/null)" != "$source_line" ]; then
  log "adding Docker's apt repository"
  mkdir -p "$(dirname "$SOURCES")"
  echo "$source_line" > "$SOURCES"
fi

installed=$(dpkg-query -W -f='${Version}' docker-ce 2>/dev/null || true)
case "$installed" in
  "5:$DOCKER_VERSION-"*) ;;
  *)
    log "installing Docker $DOCKER_VERSION (found '${installed:-none}')"
    apt-get update -q
    package_version=$(apt-cache madison docker-ce | awk -v want="5:$DOCKER_VERSION-" 'index($3, want) == 1 { print $3; exit }')
    if [ -z "$package_version" ]; then
      echo "edge-first-boot: Docker $DOCKER_VERSION is not in Docker's repository for $VERSION_CODENAME" >&2
      exit 1
    fi
    apt-mark unhold docker-ce docker-ce-cli >/dev/null
    apt-get install -y -q --allow-downgrades "docker-ce=$package_version" "docker-ce-cli=$package_version" \
      containerd.io docker-buildx-plugin
    # Held, so unattended upgrades don't move the engine under running jobs.
    apt-mark hold docker-ce docker-ce-cli >/dev/null
    ;;
esac

if ! id -nG "$ADMIN_USER" | tr ' ' '\n' | grep -qx docker; then
  log "adding $ADMIN_USER to the docker group"
  usermod -aG docker "$ADMIN_USER"
fi
systemctl is-enabled --quiet docker || systemctl enable docker
systemctl is-active --quiet docker || systemctl start docker
if [ "$GPU_COUNT" -gt 0 ]; then install_nvidia_gpu_stack; fi

if [ "$K3S_ROLE" != none ]; then
  install_k3s
fi
if [ "$K3S_ROLE" != none ] && [ "$GPU_COUNT" -gt 0 ]; then check_k3s_nvidia_runtime; fi
if [ "$K3S_ROLE" = server ]; then
  wait_for_node
  roll_agents
  apply_manifests
  if [ "$GPU_COUNT" -gt 0 ]; then check_gpu_visible_to_a_pod; fi
  install_helm
  install_arc_agents
  install_instance_types_unit
  ready_line="k3s=$K3S_VERSION arc=$ARC_CHART_VERSION"
  if [ "$(cat "$CLUSTER_READY" 2>/dev/null)" != "$ready_line" ]; then
    echo "$ready_line" > "$CLUSTER_READY"
  fi
fi

# Last, after every step above succeeded: the marker the attach step waits for.
done_line="docker=$DOCKER_VERSION user=$ADMIN_USER"
if [ "$K3S_ROLE" != none ]; then done_line="$done_line k3s=$K3S_VERSION role=$K3S_ROLE"; fi
if [ "$GPU_COUNT" -gt 0 ]; then done_line="$done_line gpus=$GPU_COUNT"; fi
if [ "$(cat "$MARKER" 2>/dev/null)" != "$done_line" ]; then
  mkdir -p "$(dirname "$MARKER")"
  echo "$done_line" > "$MARKER"
fi
log "done"
