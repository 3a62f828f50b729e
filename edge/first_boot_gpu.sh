# --- NVIDIA GPUs (issue 24): rendered into first_boot.sh by edge/first_boot.py --------------------
# On an NCv3 VM (NVIDIA V100, passthrough), in both compute modes: the NVIDIA driver from Ubuntu's
# archive at a pinned branch, NVIDIA's container toolkit from NVIDIA's apt repository (signing key
# pinned by fingerprint, packages pinned by version and held), Docker's NVIDIA runtime, and with
# K3s: containerd's default runtime set to NVIDIA's (K3s's config, default-runtime) and checked
# in the config K3s renders; on the server, a pod that must see every GPU before the cluster is
# declared ready. Sources and reasons: docs/deploy/gpus.md.
GPU_COUNT="@GPU_COUNT@"
NVIDIA_DRIVER_BRANCH="@NVIDIA_DRIVER_BRANCH@"
NVIDIA_TOOLKIT_VERSION="@NVIDIA_TOOLKIT_VERSION@"
NVIDIA_KEY_FINGERPRINT="@NVIDIA_KEY_FINGERPRINT@"
NVIDIA_KEY_URL="https://nvidia.github.io/libnvidia-container/gpgkey"
NVIDIA_REPOSITORY="https://nvidia.github.io/libnvidia-container/stable/deb"
NVIDIA_KEYRING="$ROOT/etc/apt/keyrings/nvidia-container-toolkit.asc"
NVIDIA_SOURCES="$ROOT/etc/apt/sources.list.d/nvidia-container-toolkit.list"
NVIDIA_TOOLKIT_PACKAGES=(nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1)
DOCKER_DAEMON_CONFIG="$ROOT/etc/docker/daemon.json"
CONTAINERD_CONFIG="$ROOT/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
GPU_CHECK_NAMESPACE="@GPU_CHECK_NAMESPACE@"
GPU_CHECK_POD="@GPU_CHECK_POD@"
GPU_CHECKED="$STATE_DIR/gpu-check"
GPU_REBOOTED="$STATE_DIR/gpu-driver-reboot"
RERUN_UNIT="edge-training-first-boot.service"

# How many GPUs the driver shows; 0 while no driver is loaded.
gpus_visible() { { nvidia-smi -L 2> /dev/null || true; } | grep -c '^GPU [0-9]' || true; }

install_nvidia_driver() {
  local utils="nvidia-utils-$NVIDIA_DRIVER_BRANCH" seen
  if ! is_installed "$utils"; then
    # Microsoft's N-series setup for Ubuntu: Ubuntu's packaged NVIDIA driver, through ubuntu-drivers,
    # which picks the kernel modules Canonical built and signed for the running kernel. --gpgpu
    # with a branch pins the branch (a compute install without the desktop stack); nvidia-smi
    # comes with the branch's utils package.
    log "installing the NVIDIA driver, branch $NVIDIA_DRIVER_BRANCH, from Ubuntu's archive"
    apt-get update -q
    is_installed ubuntu-drivers-common || apt-get install -y -q ubuntu-drivers-common
    ubuntu-drivers install --gpgpu "nvidia:$NVIDIA_DRIVER_BRANCH"
    apt-get install -y -q "$utils"
  fi
  [ "$(gpus_visible)" -gt 0 ] || modprobe nvidia || true
  seen=$(gpus_visible)
  if [ "$seen" -ge "$GPU_COUNT" ]; then return 0; fi
  if [ "$seen" -gt 0 ]; then
    fail "the NVIDIA driver shows $seen GPU(s); this VM size has $GPU_COUNT (see: nvidia-smi -L)"
  fi
  if [ -e "$GPU_REBOOTED" ]; then
    fail "no GPU is visible after installing the NVIDIA driver $NVIDIA_DRIVER_BRANCH and rebooting (see: nvidia-smi; dmesg | grep -i nvidia)"
  fi
  reboot_to_load_the_driver
}

# The module did not load in place (nouveau holds the device, or the kernel was updated with it):
# continue after a reboot, once, through a unit that runs this script until its marker exists.
reboot_to_load_the_driver() {
  local unit="$ROOT/etc/systemd/system/$RERUN_UNIT" script
  script=$(readlink -f "${BASH_SOURCE[0]}")
  mkdir -p "$(dirname "$unit")" "$STATE_DIR"
  printf '%s\n' \
    "[Unit]" \
    "Description=Continue the edge-training first boot after the NVIDIA driver's reboot" \
    "Wants=network-online.target" \
    "After=network-online.target" \
    "ConditionPathExists=!${MARKER#"$ROOT"}" \
    "" \
    "[Service]" \
    "Type=oneshot" \
    "TimeoutStartSec=infinity" \
    "ExecStart=/bin/bash $script" \
    "" \
    "[Install]" \
    "WantedBy=multi-user.target" > "$unit"
  date -u +%Y-%m-%dT%H:%M:%SZ > "$GPU_REBOOTED"
  systemctl daemon-reload
  systemctl enable "$RERUN_UNIT"
  log "rebooting to load the NVIDIA driver; $RERUN_UNIT continues the first boot after it"
  systemctl reboot
  exit 0
}

install_nvidia_container_toolkit() {
  local key fingerprint line installed
  if [ ! -s "$NVIDIA_KEYRING" ]; then
    log "fetching NVIDIA's container toolkit signing key"
    key=$(mktemp)
    fetch "$NVIDIA_KEY_URL" "$key"
    fingerprint=$(gpg --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" { print $10; exit }')
    if [ "$fingerprint" != "$NVIDIA_KEY_FINGERPRINT" ]; then
      rm -f "$key"
      fail "NVIDIA's key has fingerprint '$fingerprint', expected $NVIDIA_KEY_FINGERPRINT"
    fi
    install -D -m 0644 "$key" "$NVIDIA_KEYRING"
    rm -f "$key"
  fi
  # The line NVIDIA's nvidia-container-toolkit.list holds, written here rather than downloaded,
  # with the key above as the only one apt accepts for it.
  line="deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] $NVIDIA_REPOSITORY/$arch /"
  if [ "$(cat "$NVIDIA_SOURCES" 2> /dev/null)" != "$line" ]; then
    log "adding NVIDIA's container toolkit repository"
    mkdir -p "$(dirname "$NVIDIA_SOURCES")"
    echo "$line" > "$NVIDIA_SOURCES"
  fi
  installed=$(dpkg-query -W -f='${Version}' nvidia-container-toolkit 2> /dev/null || true)
  if [ "$installed" != "$NVIDIA_TOOLKIT_VERSION" ]; then
    log "installing the NVIDIA container toolkit $NVIDIA_TOOLKIT_VERSION (found '${installed:-none}')"
    apt-get update -q
    apt-mark unhold "${NVIDIA_TOOLKIT_PACKAGES[@]}" > /dev/null
    # All four at one version, as NVIDIA's install guide pins them.
    apt-get install -y -q --allow-downgrades "${NVIDIA_TOOLKIT_PACKAGES[@]/%/=$NVIDIA_TOOLKIT_VERSION}"
    apt-mark hold "${NVIDIA_TOOLKIT_PACKAGES[@]}" > /dev/null
  fi
}

configure_docker_nvidia_runtime() {
  # Docker's "nvidia" runtime (what `docker run --gpus` and the virtual-machine mode's jobs use).
  if grep -qs '"nvidia"' "$DOCKER_DAEMON_CONFIG"; then return 0; fi
  log "adding the NVIDIA runtime to Docker"
  nvidia-ctk runtime configure --runtime=docker --config="$DOCKER_DAEMON_CONFIG"
  systemctl restart docker
}

install_nvidia_gpu_stack() {
  install_nvidia_driver
  install_nvidia_container_toolkit
  configure_docker_nvidia_runtime
}

# K3s finds nvidia-container-runtime when it starts and adds a runtime for it to the containerd
# config it renders; default-runtime (K3s's config) makes it the default, so pods that do not ask
# for the RuntimeClass (the device plugin, Azure ML's jobs) get the GPU too.
check_k3s_nvidia_runtime() {
  grep -qs 'nvidia-container-runtime' "$CONTAINERD_CONFIG" ||
    fail "K3s found no NVIDIA runtime: $CONTAINERD_CONFIG does not mention nvidia-container-runtime (was the toolkit installed before K3s started? see: journalctl -u k3s)"
  grep -Eqs '^[[:space:]]*default_runtime_name[[:space:]]*=[[:space:]]*"nvidia"' "$CONTAINERD_CONFIG" ||
    fail "containerd's default runtime is not nvidia in $CONTAINERD_CONFIG (K3s config: default-runtime)"
}

# The readiness check: a pod on the NVIDIA runtime must list every GPU of the VM, or the first
# boot fails here, before Arc, the marker and any job.
check_gpu_visible_to_a_pod() {
  # Beside the manifests, not among them: apply_manifests applies every file of that folder.
  local pod="$ROOT/etc/edge-training/gpu-check.yaml" wanted deadline phase output seen
  write_gpu_check_pod "$pod" || true
  wanted="gpus=$GPU_COUNT driver=$NVIDIA_DRIVER_BRANCH toolkit=$NVIDIA_TOOLKIT_VERSION k3s=$K3S_VERSION"
  [ "$(cat "$GPU_CHECKED" 2> /dev/null)" != "$wanted" ] || return 0
  kubectl wait --for=create runtimeclass/nvidia --timeout=120s > /dev/null ||
    fail "K3s declared no RuntimeClass nvidia within 120s (kubectl get runtimeclass)"
  log "checking that a pod sees the GPU(s)"
  kubectl delete -f "$pod" --ignore-not-found --wait=true > /dev/null
  kubectl apply -f "$pod" > /dev/null
  deadline=$((SECONDS + 600))  # the first pull of the image included
  while :; do
    phase=$(kubectl get -f "$pod" -o 'jsonpath={.status.phase}' 2> /dev/null || true)
    case "$phase" in Succeeded | Failed) break ;; esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      kubectl describe -f "$pod" >&2 || true
      fail "the GPU check pod did not finish within 600s (phase '${phase:-unknown}')"
    fi
    sleep 5
  done
  output=$(kubectl logs --namespace "$GPU_CHECK_NAMESPACE" "pod/$GPU_CHECK_POD" 2>&1 || true)
  kubectl delete -f "$pod" --wait=false > /dev/null || true
  seen=$(printf '%s\n' "$output" | grep -c '^GPU [0-9]' || true)
  if [ "$phase" != Succeeded ] || [ "$seen" -lt "$GPU_COUNT" ]; then
    printf '%s\n' "$output" >&2
    fail "no GPU visible to a pod: the check pod ended $phase and listed $seen of $GPU_COUNT GPU(s)"
  fi
  log "a pod sees $seen GPU(s)"
  echo "$wanted" > "$GPU_CHECKED"
}
