# shellcheck shell=bash
# Taking the node pool of hack/lib/testenv-node.sh down: the kubelets and the
# control-plane components stopped, the pods' containers, cgroups, bridges and
# mounts removed, and the host state testenv-node.sh recorded (sysctls, fixed
# paths) restored. Sourced after testenv-node.sh; node_down is idempotent.

# ---- host state: restore what record_host_state recorded -------------------------

restore_host_state() {
  local k v p
  if [[ -f "$NODE/sysctls.orig" ]]; then
    while IFS='=' read -r k v; do
      [[ -n "$k" && "$(sysctl -n "$k" 2>/dev/null)" != "$v" ]] || continue
      sysctl -q -w "$k=$v" >/dev/null && log "restored sysctl $k=$v"
    done <"$NODE/sysctls.orig"
  fi
  if [[ -f "$NODE/paths.orig" ]]; then
    for p in "${NODE_FIXED_PATHS[@]}"; do
      grep -qxF "$p" "$NODE/paths.orig" && continue
      [[ -e "$p" ]] || continue
      unmount_tree "$p"
      rm -rf "$p" && log "removed $p (created by the node)"
    done
  fi
}

unmount_tree() {
  local m
  awk -v a="$1/" 'index($5, a) == 1 { print $5 }' /proc/self/mountinfo | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# ---- pods, cgroups, runtime state ----------------------------------------------------

# Kills every process left in this bed's pod cgroups, then removes the cgroups
# (deepest first) in every v1 hierarchy and the unified one.
remove_node_cgroups() {
  local n root hier d pid
  for n in docker containerd; do
    root=$(node_cgroup_root "$n")
    for hier in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      d="${hier%/}$root"
      [[ -d "$d" ]] || continue
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done \
        < <(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done
    sleep 0.3
    for hier in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      d="${hier%/}$root"
      [[ -d "$d" ]] || continue
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$d" ]] && warn "cgroup $d could not be removed"
    done
  done
  return 0
}

# Containers of kubelet's pods in the bed's dockerd (cri-dockerd labels them).
remove_pod_containers_docker() {
  local ids
  ids=$(dk ps -aq --filter label=io.kubernetes.docker.type 2>/dev/null) || return 0
  [[ -n "$ids" ]] || return 0
  # shellcheck disable=SC2086 # one id per word
  dk rm -f -v $ids >/dev/null 2>&1 || true
  log "removed $(wc -w <<<"$ids") pod containers from dockerd"
}

remove_pod_tasks_containerd() {
  local id
  node_containerd_ready >/dev/null 2>&1 || return 0
  for id in $(node_ctr tasks ls -q 2>/dev/null); do node_ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 0.5
  for id in $(node_ctr tasks ls -q 2>/dev/null); do node_ctr tasks delete -f "$id" >/dev/null 2>&1 || true; done
  for id in $(node_ctr containers ls -q 2>/dev/null); do node_ctr containers delete "$id" >/dev/null 2>&1 || true; done
}

# containerd 1.6 puts shim sockets in the fixed /run/containerd/s and runc its
# state in /run/containerd/runc: remove the sockets nothing listens on any more
# (never another containerd's live ones), then the directories, when empty and
# the bed created them. Called again by testenv.sh after containerd stopped.
clean_containerd_run_dir() {
  local s listening
  [[ -d /run/containerd/s ]] || return 0
  listening=$(ss -Hxl 2>/dev/null | awk '{print $5}')
  for s in /run/containerd/s/*; do
    [[ -S "$s" ]] || continue
    grep -qxF "$s" <<<"$listening" || rm -f "$s"
  done
  if [[ -f "$NODE/paths.orig" ]] && ! grep -qxF /run/containerd "$NODE/paths.orig"; then
    rmdir /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd 2>/dev/null || true
  fi
}

node_down() {
  local n
  svc_stop kubelet-containerd
  svc_stop kubelet-docker
  svc_stop kube-scheduler
  svc_stop kube-controller-manager
  remove_pod_tasks_containerd
  svc_stop cri-dockerd
  if docker_ready >/dev/null 2>&1; then remove_pod_containers_docker; fi
  remove_node_cgroups
  for n in docker containerd; do
    if ip link show "$(node_bridge "$n")" >/dev/null 2>&1; then
      ip link del "$(node_bridge "$n")" && log "removed bridge $(node_bridge "$n")"
    fi
  done
  rm -f "$CONTAINERD_CNI_CONF_DIR/05-imageops-bridge.conflist"
  unmount_tree "$NODE"
  clean_containerd_run_dir
  restore_host_state
  return 0
}
