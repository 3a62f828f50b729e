#!/usr/bin/env bash
# First boot of the edge VM: Docker Engine from Docker's apt repository at a pinned version, the
# admin user in the docker group, Docker running, and a marker the attach step waits for.
# Idempotent: every step checks before it changes anything, so a second run changes nothing.
# Run by cloud-init (runcmd) or by the CustomScript extension; components/first_boot.py fills in
# the two values below (both validated by components/config.py).
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

log() { echo "edge-first-boot: $*"; }
is_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# shellcheck source=/dev/null
. "$ROOT/etc/os-release"
arch=$(dpkg --print-architecture)
export DEBIAN_FRONTEND=noninteractive

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

done_line="docker=$DOCKER_VERSION user=$ADMIN_USER"
if [ "$(cat "$MARKER" 2>/dev/null)" != "$done_line" ]; then
  mkdir -p "$(dirname "$MARKER")"
  echo "$done_line" > "$MARKER"
fi
log "done"
