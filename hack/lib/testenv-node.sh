# shellcheck shell=bash
# shellcheck disable=SC2034,SC2153 # globals shared with hack/testenv.sh; PORT is in testenv-common.sh
# A one-node-pool cluster for testenv.sh: kube-controller-manager, kube-scheduler
# and two kubelets on loopback:
#   node 127.0.0.1: kubelet -> cri-dockerd -> the bed's dockerd (the engine the
#                   agent talks to, so an image it pulls is on this node);
#   node 127.0.0.2: kubelet -> the bed's containerd 1.6 (Debian; started by
#                   hack/lib/testenv-containerd.sh, the one the containerd
#                   backend's tests use).
# Sourced after testenv-kube.sh and testenv-containerd.sh; taking the nodes down
# and undoing the host side effects is hack/lib/testenv-node-down.sh.
#
# Facts of this machine handled here (see issue 10): cgroup v1 (failCgroupV1:
# false, cgroupfs driver, a cgroupRoot of our own); no CAP_SYS_RESOURCE in the
# bounding set (negative oom_score_adj fails: oomScoreAdj 0, patched binaries,
# restrict_oom_score_adj); the apiserver calls kubelets anonymously (kubelets
# bound to loopback, anonymous auth); no internet (a local pause image); CNI
# bridges without gateway or masquerade (a pod reaches only its own /24).
#
# Host side effects undone by node_down: the sysctls kubelet sets host-wide
# (recorded before the first kubelet starts, restored after the last stops),
# the fixed paths kubelet uses (/var/lib/kubelet/device-plugins,
# /var/log/containers, /var/log/pods) when they did not exist before, the CNI
# bridges, the pods' containers, mounts and cgroups.

NODE=$DIR/node
PAUSE_IMAGE=imageops-testenv/pause:1.0
NODE_DOCKER=127.0.0.1
NODE_CTRD=127.0.0.2
CRI_DOCKERD_SOCK=$RUNDIR/cri-dockerd.sock
# The bed's containerd 1.6 (hack/lib/testenv-containerd.sh).
NODE_CONTAINERD_SOCK=$CONTAINERD_SOCK
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)
# Paths kubelet and CNI use whatever their configuration says.
NODE_FIXED_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/netns)
# Recorded too, but only emptied directories are removed (clean_containerd_run_dir).
NODE_SHARED_PATHS=(/run/containerd)
CNI_BIN=/usr/lib/cni

PORT_NAMES+=(kcm scheduler kubelet_docker kubelet_docker_healthz kubelet_ctrd kubelet_ctrd_healthz)
PORT_OWNER+=([kcm]=kube-controller-manager [scheduler]=kube-scheduler
  [kubelet_docker]=kubelet-docker [kubelet_docker_healthz]=kubelet-docker
  [kubelet_ctrd]=kubelet-containerd [kubelet_ctrd_healthz]=kubelet-containerd)
PACKAGES+=(containernetworking-plugins iproute2)

# Bridge name (<= 15 chars) and /24 of a node, unique per bed.
node_bridge() { printf 'io%s%s' "${ID:0:8}" "${1:0:1}"; } # docker|containerd
node_subnet() { # docker|containerd
  local k=1
  [[ "$1" == containerd ]] && k=2
  printf '10.%d.%d.0/24' $(( 200 + k )) $(( 16#${ID:0:4} % 250 ))
}
node_cgroup_root() { printf '/imageops-%s-%s' "$ID" "$1"; }

# ---- host state: record once (testenv-node-down.sh restores it) ---------------

record_host_state() {
  mkdir -p "$NODE"
  local k p
  if [[ ! -f "$NODE/sysctls.orig" ]]; then
    for k in "${NODE_SYSCTLS[@]}"; do
      printf '%s=%s\n' "$k" "$(sysctl -n "$k")"
    done >"$NODE/sysctls.orig.tmp" && mv "$NODE/sysctls.orig.tmp" "$NODE/sysctls.orig"
  fi
  if [[ ! -f "$NODE/paths.orig" ]]; then
    for p in "${NODE_FIXED_PATHS[@]}" "${NODE_SHARED_PATHS[@]}"; do
      [[ -e "$p" ]] && echo "$p"
    done >"$NODE/paths.orig.tmp" || true
    mv "$NODE/paths.orig.tmp" "$NODE/paths.orig"
  fi
}

# ---- images and CNI -----------------------------------------------------------

# The sandbox ("pause") image: the locally built static binary, imported.
pause_tar() {
  local root="$NODE/pause-rootfs"
  rm -rf "$root"; mkdir -p "$root"
  cp "$(readlink -f "$BIN/pause")" "$root/pause"
  tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$NODE/pause.tar" .
  rm -rf "$root"
}

ensure_pause_docker() {
  dk image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  pause_tar
  dk import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" <"$NODE/pause.tar" >/dev/null \
    || { log "docker import of the pause image failed"; return 1; }
  log "node: imported $PAUSE_IMAGE into dockerd"
}

# write_cni_conf N DIR: a bridge network for node N's pods. "05-" sorts before
# the bed containerd's loopback-only file: CRI uses the first config, and a pod
# sandbox needs an interface with an address (loopback alone fails).
write_cni_conf() {
  local n=$1 d=$2
  mkdir -p "$d" "$NODE/cni-ipam-$n"
  # Written aside and renamed: CRI watches the directory.
  cat >"$NODE/cni-$n.tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "imageops-$n",
  "plugins": [
    {"type": "bridge", "bridge": "$(node_bridge "$n")", "isGateway": false,
     "isDefaultGateway": false, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "subnet": "$(node_subnet "$n")",
              "dataDir": "$NODE/cni-ipam-$n"}},
    {"type": "loopback"}
  ]
}
EOF
  mv "$NODE/cni-$n.tmp" "$d/05-imageops-bridge.conflist"
}

# containerd 1.6's CRI reads its CNI config when it starts (a file added later is
# not picked up): the bridge goes into the bed containerd's CNI directory first.
prepare_node_cni() {
  write_cni_conf containerd "$CONTAINERD_CNI_CONF_DIR"
}

# ---- control plane: controller manager, scheduler ------------------------------

# Components reach the API server with the bed's admin kubeconfig.
kcm_ready() { curl -fsk "https://127.0.0.1:${PORT[kcm]}/healthz" | grep -q ok; }
scheduler_ready() { curl -fsk "https://127.0.0.1:${PORT[scheduler]}/healthz" | grep -q ok; }

ensure_controller_manager() {
  mkdir -p "$NODE/kcm"
  local args=(
    "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE"
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE"
    --authentication-skip-lookup
    --bind-address 127.0.0.1 --secure-port "${PORT[kcm]}" --cert-dir "$NODE/kcm"
    # Signs the default ServiceAccounts' tokens and publishes kube-root-ca.crt.
    --service-account-private-key-file "$KUBE/sa.key" --root-ca-file "$KUBE/ca.crt"
    --use-service-account-credentials=false
    --cluster-name "imageops-$ID" --leader-elect=false
    # No cloud, no node IPAM: pods get addresses from each node's CNI config.
    --allocate-node-cidrs=false --controllers '*,-nodeipam,-cloud-node-lifecycle'
    --concurrent-gc-syncs 5 --node-monitor-grace-period 40s
  )
  local fp
  fp=$( { printf '%s\n' "${args[*]}"; readlink -f "$BIN/kube-controller-manager"; } | digest)
  svc_ensure kube-controller-manager "$fp" "$DIR/kube-controller-manager.log" 60 kcm_ready -- "${args[@]}"
}

ensure_scheduler() {
  mkdir -p "$NODE/scheduler"
  local args=(
    "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE"
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE"
    --authentication-skip-lookup
    --bind-address 127.0.0.1 --secure-port "${PORT[scheduler]}" --cert-dir "$NODE/scheduler"
    --leader-elect=false
  )
  local fp
  fp=$( { printf '%s\n' "${args[*]}"; readlink -f "$BIN/kube-scheduler"; } | digest)
  svc_ensure kube-scheduler "$fp" "$DIR/kube-scheduler.log" 60 scheduler_ready -- "${args[@]}"
}

# ---- runtimes ------------------------------------------------------------------

cri_dockerd_ready() { [[ -S "$CRI_DOCKERD_SOCK" ]]; }

ensure_cri_dockerd() {
  ensure_pause_docker || return 1
  write_cni_conf docker "$NODE/cni-docker"
  local args=(
    env DOCKER_API_VERSION=1.41 "$BIN/cri-dockerd"
    --container-runtime-endpoint "unix://$CRI_DOCKERD_SOCK"
    --docker-endpoint "unix://$DOCKER_SOCK"
    --cri-dockerd-root-directory "$NODE/cri-dockerd"
    --pod-infra-container-image "$PAUSE_IMAGE"
    --network-plugin cni --cni-bin-dir "$CNI_BIN" --cni-conf-dir "$NODE/cni-docker"
    --cni-cache-dir "$NODE/cni-cache-docker"
    --streaming-bind-addr 127.0.0.1:0
  )
  local fp
  fp=$( { printf '%s\n' "${args[*]}"; readlink -f "$BIN/cri-dockerd"; } | digest)
  svc_ensure cri-dockerd "$fp" "$DIR/cri-dockerd.log" 60 cri_dockerd_ready -- "${args[@]}"
}

node_ctr() { ctr --address "$NODE_CONTAINERD_SOCK" --namespace k8s.io "$@"; }
node_containerd_ready() { node_ctr version; }

# The pause image under the sandbox image name the bed's containerd is configured with.
ensure_pause_containerd() {
  node_ctr images ls -q 2>/dev/null | grep -qxF "$CONTAINERD_SANDBOX_IMAGE" && return 0
  if ! { dk save "$PAUSE_IMAGE" | node_ctr images import - >/dev/null \
         && node_ctr images tag --force "docker.io/$PAUSE_IMAGE" "$CONTAINERD_SANDBOX_IMAGE" >/dev/null; }; then
    log "import of the pause image into containerd failed"
    return 1
  fi
  log "node: imported $PAUSE_IMAGE into containerd as $CONTAINERD_SANDBOX_IMAGE"
}

# ---- kubelets --------------------------------------------------------------------

# write_kubelet_config N NODE_IP PORT HEALTHZ_PORT ENDPOINT
write_kubelet_config() {
  local n=$1 ip=$2 port=$3 hport=$4 endpoint=$5 d="$NODE/kubelet-$1"
  mkdir -p "$d/root" "$d/pods"
  cat >"$d/config.yaml" <<EOF
# generated by hack/testenv.sh
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: $port
readOnlyPort: 0
healthzBindAddress: $ip
healthzPort: $hport
containerRuntimeEndpoint: unix://$endpoint
# The apiserver calls kubelets without a client certificate; loopback only.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
# cgroup v1 on this machine; a cgroup tree of this bed's own.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $(node_cgroup_root "$n")
cgroupsPerQOS: true
failSwapOn: false
# A negative oom_score_adj needs CAP_SYS_RESOURCE, which this VM lacks.
oomScoreAdj: 0
makeIPTablesUtilChains: false
podLogsDir: $d/pods
# The bed's dockerd holds the tests' images: kubelet must never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusReportFrequency: 10s
resolvConf: /etc/resolv.conf
shutdownGracePeriod: 0s
EOF
}

kubelet_ready() { curl -fs "http://$1:$2/healthz" | grep -q ok && kc get node "$1" >/dev/null; }
kubelet_docker_ready() { kubelet_ready "$NODE_DOCKER" "${PORT[kubelet_docker_healthz]}"; }
kubelet_ctrd_ready() { kubelet_ready "$NODE_CTRD" "${PORT[kubelet_ctrd_healthz]}"; }

# kubelet refuses a cgroupRoot that does not exist in every v1 hierarchy; a new
# cpuset cgroup must be given its parent's cpus and mems before use.
make_node_cgroups() { # N
  local root hier d
  root=$(node_cgroup_root "$1")
  for hier in /sys/fs/cgroup/*/; do
    [[ -f "${hier}cgroup.procs" ]] || continue
    d="${hier%/}$root"
    mkdir -p "$d" || return 1
    if [[ -f "${hier}cpuset.cpus" && -z "$(cat "$d/cpuset.cpus")" ]]; then
      cat "${hier}cpuset.cpus" >"$d/cpuset.cpus" && cat "${hier}cpuset.mems" >"$d/cpuset.mems"
    fi
  done
}

# start_kubelet NAME N NODE_IP PORT HEALTHZ ENDPOINT CHECK RUNTIME_LABEL
start_kubelet() {
  local name=$1 n=$2 ip=$3 port=$4 hport=$5 endpoint=$6 check=$7 runtime=$8 d="$NODE/kubelet-$2"
  record_host_state
  make_node_cgroups "$n" || { log "could not create the cgroup $(node_cgroup_root "$n")"; return 1; }
  write_kubelet_config "$n" "$ip" "$port" "$hport" "$endpoint"
  local args=(
    "$BIN/kubelet" --config "$d/config.yaml" --kubeconfig "$KUBECONFIG_FILE"
    --root-dir "$d/root" --cert-dir "$d/pki"
    # --node-ip refuses loopback; the override makes the InternalIP 127.0.0.1.
    --hostname-override "$ip"
    --node-labels "imageops.dev/testenv-runtime=$runtime"
  )
  local fp
  fp=$( { printf '%s\n' "${args[*]}"; cat "$d/config.yaml"; readlink -f "$BIN/kubelet"; } | digest)
  svc_ensure "$name" "$fp" "$DIR/$name.log" 90 "$check" -- "${args[@]}"
}

node_ready_wait() { # NODE: until the Ready condition is True
  local i
  for i in $(seq 1 120); do
    [[ "$(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] \
      && return 0
    sleep 0.5
  done
  log "node $1 is not Ready after 60s"
  return 1
}

# kubelet's device manager empties the fixed /var/lib/kubelet/device-plugins
# when it starts: two beds' kubelets on one machine would break each other.
no_other_kubelet() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    if [[ "$cmd" == */kubelet\ --config* && "$cmd" != *"$DIR/"* ]]; then
      log "another kubelet runs on this machine (pid ${p#/proc/}: ${cmd:0:100});" \
        "one bed with a node per machine at a time (/var/lib/kubelet/device-plugins is shared)"
      return 1
    fi
  done
}

ensure_node_docker() {
  no_other_kubelet || return 1
  record_host_state
  ensure_cri_dockerd || return 1
  start_kubelet kubelet-docker docker "$NODE_DOCKER" "${PORT[kubelet_docker]}" \
    "${PORT[kubelet_docker_healthz]}" "$CRI_DOCKERD_SOCK" kubelet_docker_ready docker || return 1
  node_ready_wait "$NODE_DOCKER"
}

ensure_node_containerd_kubelet() {
  no_other_kubelet || return 1
  record_host_state
  ensure_pause_docker && ensure_pause_containerd || return 1
  start_kubelet kubelet-containerd containerd "$NODE_CTRD" "${PORT[kubelet_ctrd]}" \
    "${PORT[kubelet_ctrd_healthz]}" "$NODE_CONTAINERD_SOCK" kubelet_ctrd_ready containerd || return 1
  node_ready_wait "$NODE_CTRD"
}

# Waits for what the controller manager must have made before pods can run:
# the default ServiceAccount and kube-root-ca.crt in "default".
node_selfcheck() {
  local i
  for i in $(seq 1 60); do
    kc get serviceaccount default -n default >/dev/null 2>&1 \
      && kc get configmap kube-root-ca.crt -n default >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "the controller manager made no default ServiceAccount or kube-root-ca.crt"
  return 1
}
