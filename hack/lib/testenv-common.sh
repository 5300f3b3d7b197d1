# shellcheck shell=bash
# shellcheck disable=SC2034 # globals used by the other hack/lib files
# Shared helpers for hack/testenv.sh: paths, failure policy, ports, daemons.
# Sourced, not executed. Expects REPO to be set by the caller.

# ---- paths ---------------------------------------------------------------

DIR=${IMAGEOPS_TESTENV_DIR:-$REPO/.testenv}
mkdir -p "$(dirname "$DIR")"
DIR=$(cd "$(dirname "$DIR")" && pwd -P)/$(basename "$DIR")
# One id per test-bed directory: two clones get different ids, hence
# different port ranges, socket dirs and containerd namespaces.
ID=$(printf '%s' "$DIR" | sha256sum | cut -c1-10)
# Unix socket paths are limited to 108 bytes and dockerd's supervised
# containerd nests ~45 bytes under the exec-root; deep clones use /run.
if (( ${#DIR} > 50 )); then RUNDIR=/run/imageops-$ID; else RUNDIR=$DIR/run; fi
PIDS=$DIR/pids
MARKER=$DIR/.imageops-testenv
DOCKER_SOCK=$RUNDIR/docker.sock
SEED_IMAGE=imageops-seed/busybox:1.0
SEED_REPO=seed/tiny
SEED_TAG=1.0

# ---- logging and failure policy -------------------------------------------

log() { printf 'testenv: %s\n' "$*" >&2; }
warn() { printf 'testenv: WARNING: %s\n' "$*" >&2; }
die() { printf 'testenv: ERROR: %s\n' "$*" >&2; exit 1; }
is_ci() { [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; }

# Prints the last lines of a log to help explain a failure.
show_log_tail() {
  [[ -f "$1" ]] || return 0
  printf -- '---- last lines of %s ----\n' "$1" >&2
  tail -n "${2:-25}" "$1" >&2
  printf -- '----\n' >&2
}

# ---- ports ----------------------------------------------------------------
# Ports are picked free at the first `up`, starting at an offset derived from
# the bed id (so two clones rarely probe the same ports), recorded in
# $DIR/ports.env and reused while the owning daemon runs or the port is free.
# The range stays below the kernel's ephemeral range (32768+), where outgoing
# connections could grab a port between two `up`s.

PORT_NAMES=(etcd_client etcd_peer apiserver registry_open registry_auth)
declare -A PORT=()
declare -A PORT_OWNER=([etcd_client]=etcd [etcd_peer]=etcd [apiserver]=kube-apiserver
  [registry_open]=registry-open [registry_auth]=registry-auth)

port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

load_ports() {
  local name value
  [[ -f "$DIR/ports.env" ]] || return 0
  while IFS='=' read -r name value; do
    [[ "$name" =~ ^[a-z_]+$ && "$value" =~ ^[0-9]+$ ]] && PORT[$name]=$value
  done <"$DIR/ports.env"
}

allocate_ports() {
  local name p base taken=" "
  base=$(( 20000 + (16#${ID:0:6} % 2400) * 5 ))
  for name in "${PORT_NAMES[@]}"; do
    p=${PORT[$name]:-}
    if [[ -n "$p" ]] && { svc_pid "${PORT_OWNER[$name]}" >/dev/null || ! port_in_use "$p"; }; then
      taken+="$p "
      continue
    fi
    p=$base
    while port_in_use "$p" || [[ "$taken" == *" $p "* ]]; do
      p=$(( p >= 32000 ? 20000 : p + 1 ))
    done
    [[ -n "${PORT[$name]:-}" ]] && log "port ${PORT[$name]} for $name is taken by someone else; using $p"
    PORT[$name]=$p
    taken+="$p "
  done
  local tmp="$DIR/ports.env.tmp"
  : >"$tmp"
  for name in "${PORT_NAMES[@]}"; do printf '%s=%s\n' "$name" "${PORT[$name]}" >>"$tmp"; done
  mv "$tmp" "$DIR/ports.env"
}

# ---- daemons --------------------------------------------------------------
# Each daemon has $PIDS/NAME.pid and $PIDS/NAME.args (a fingerprint of the
# command line and config it was started with). A pid counts as ours only if
# its command line mentions $DIR/, so a recycled pid is never signalled.

svc_pid() {
  local f="$PIDS/$1.pid" pid
  [[ -s "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 1
  echo "$pid"
}

# svc_start NAME FINGERPRINT LOGFILE WRITE_PIDFILE CMD... ; sets LAST_PID.
# setsid detaches the daemon from the caller's process group and session, so
# it outlives the shell (and any job control) that ran `up`.
svc_start() {
  local name=$1 fp=$2 logf=$3 write_pid=$4
  shift 4
  mkdir -p "$PIDS"
  printf '%s\n' "$fp" >"$PIDS/$name.args"
  printf '\n==== %s testenv start: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logf"
  # 8>&-: the daemon must not inherit (and so hold forever) the bed lock.
  setsid "$@" >>"$logf" 2>&1 </dev/null 8>&- &
  LAST_PID=$!
  # dockerd refuses a --pidfile that names a live process, even its own.
  if [[ "$write_pid" == yes ]]; then echo "$LAST_PID" >"$PIDS/$name.pid"; fi
}

# svc_alive PID: the process exists and is not a zombie. An exited daemon may linger
# as a zombie (kill -0 works, cmdline is empty); cmdline alone is no proof of death,
# since it also reads empty for a moment while a wrapper (setsid, env) execs the daemon.
svc_alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# svc_wait NAME PID LOGFILE TIMEOUT_S CHECK_CMD... : polls until CHECK_CMD
# succeeds; fails early (with the log tail) when the daemon exits.
svc_wait() {
  local name=$1 pid=$2 logf=$3 timeout=$4 deadline
  shift 4
  deadline=$(( SECONDS + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! svc_alive "$pid"; then
      show_log_tail "$logf"
      log "$name exited during startup (log: $logf)"
      return 1
    fi
    if (( SECONDS >= deadline )); then
      show_log_tail "$logf"
      log "$name not ready after ${timeout}s (log: $logf)"
      return 1
    fi
    sleep 0.3
  done
}

# svc_ensure NAME FINGERPRINT LOGFILE TIMEOUT CHECK_FN -- CMD...
# Reuses a running daemon with the same fingerprint, restarts one whose
# fingerprint changed, starts a missing one; then waits for CHECK_FN.
svc_ensure() {
  local name=$1 fp=$2 logf=$3 timeout=$4 check=$5 pid write_pid=yes
  shift 6
  [[ "$name" == dockerd ]] && write_pid=no
  if pid=$(svc_pid "$name"); then
    if [[ "$(cat "$PIDS/$name.args" 2>/dev/null)" == "$fp" ]]; then
      svc_wait "$name" "$pid" "$logf" "$timeout" "$check" || return 1
      log "$name: already running (pid $pid), reused"
      return 0
    fi
    log "$name: configuration changed; restarting"
    svc_stop "$name"
  fi
  svc_start "$name" "$fp" "$logf" "$write_pid" "$@"
  svc_wait "$name" "$LAST_PID" "$logf" "$timeout" "$check" || return 1
  log "$name: started (pid $LAST_PID)"
}

svc_stop() {
  local name=$1 timeout=${2:-20} pid deadline
  if ! pid=$(svc_pid "$name"); then
    rm -f "$PIDS/$name.pid" "$PIDS/$name.args"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( SECONDS + timeout ))
  while svc_pid "$name" >/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  if svc_pid "$name" >/dev/null; then
    warn "$name (pid $pid) ignored SIGTERM for ${timeout}s; killing"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$PIDS/$name.pid" "$PIDS/$name.args"
  log "$name: stopped (was pid $pid)"
}

# Short stable digest of some text, for config fingerprints.
digest() { sha256sum | cut -c1-16; }
