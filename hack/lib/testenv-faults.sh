# shellcheck shell=bash
# Per-service stop/start/kill for fault tests (hack/testenv.sh stop|start|kill NAME).
# Sourced after the other hack/lib/testenv-*.sh files. NAME is one of SERVICES.
# `start` restarts a stopped service with the configuration `up` gave it (same
# ports, data, credentials) and waits until it is ready; `stop` is SIGTERM (then
# SIGKILL after 20 s); `kill` is SIGKILL at once, a crash without clean-up.

SERVICES=(dockerd registry-open registry-auth etcd kube-apiserver)

service_known() {
  local s
  for s in "${SERVICES[@]}"; do [[ "$s" == "$1" ]] && return 0; done
  die "unknown service '$1' (one of: ${SERVICES[*]})"
}

cmd_stop_service() {
  service_known "$1"
  lock_bed
  svc_stop "$1" 40
}

cmd_kill_service() {
  local pid
  service_known "$1"
  lock_bed
  if pid=$(svc_pid "$1"); then
    kill -KILL "$pid" 2>/dev/null || true
    while [[ -n "$(tr -d '\0' <"/proc/$pid/cmdline" 2>/dev/null)" ]]; do sleep 0.1; done
    rm -f "$PIDS/$1.pid" "$PIDS/$1.args"
    log "$1: killed (was pid $pid)"
  else
    log "$1: not running"
  fi
}

cmd_start_service() {
  service_known "$1"
  [[ -f "$MARKER" && -f "$DIR/ports.env" ]] || die "the bed is not up: run hack/testenv.sh up first"
  lock_bed
  load_ports
  case $1 in
    dockerd) ensure_dockerd ;;
    registry-open | registry-auth) ensure_registries ;;
    etcd) ensure_etcd ;;
    kube-apiserver) ensure_apiserver ;;
  esac
}
