# shellcheck shell=bash
# Debian packages, the hand-started dockerd and the seed image for testenv.sh.
# Sourced after testenv-common.sh.

# tests/e2e/test_chart.py lints hack/kind-up.sh with the shellcheck package.
# prometheus (promtool too) and tmux: tests/e2e/test_monitoring.py and test_plugin.py.
PACKAGES=(docker.io docker-registry apache2-utils openssl curl busybox-static shellcheck prometheus tmux)

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

ensure_packages() {
  local p missing=()
  command -v dpkg-query >/dev/null || { log "dpkg-query not found: not a Debian system?"; return 1; }
  for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  (( ${#missing[@]} == 0 )) && return 0
  if (( EUID != 0 )); then
    log "missing packages (${missing[*]}) and not root; run: apt-get install ${missing[*]}"
    return 1
  fi
  log "installing ${missing[*]} (log: $DIR/apt.log)"
  # Lock timeout: two beds (or a person's apt) installing at once wait, not fail.
  if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update \
         && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
              --no-install-recommends "${missing[@]}"; \
       } >>"$DIR/apt.log" 2>&1; then
    show_log_tail "$DIR/apt.log"
    log "apt-get install ${missing[*]} failed"
    return 1
  fi
}

dockerd_bin() { command -v dockerd || { [[ -x /usr/sbin/dockerd ]] && echo /usr/sbin/dockerd; }; }

dk() { docker -H "unix://$DOCKER_SOCK" "$@"; }
docker_ready() { dk info --format '{{.ServerVersion}}'; }

ensure_dockerd() {
  local bin fp
  bin=$(dockerd_bin) || { log "dockerd not found (package docker.io)"; return 1; }
  command -v docker >/dev/null || { log "docker CLI not found (package docker.io)"; return 1; }
  mkdir -p "$RUNDIR" "$DIR/docker"
  # Own (empty) config file: a host /etc/docker/daemon.json must not leak in
  # (e.g. a "hosts" entry there conflicts with --host).
  [[ -f "$DIR/docker/daemon.json" ]] || echo '{}' >"$DIR/docker/daemon.json"
  local args=(
    "$bin" --host "unix://$DOCKER_SOCK"
    --data-root "$DIR/docker-data" --exec-root "$RUNDIR/exec"
    --pidfile "$PIDS/dockerd.pid" --config-file "$DIR/docker/daemon.json"
    --iptables=false --ip6tables=false --bridge=none
    # Containers get 3s (not 10s) to stop on `down`.
    --shutdown-timeout 3
    # Namespaces keep two beds apart if they share a system containerd.
    --containerd-namespace "imageops-$ID" --containerd-plugins-namespace "imageops-$ID-plugins"
  )
  fp=$(printf '%s\n' "${args[*]}" | digest)
  svc_ensure dockerd "$fp" "$DIR/dockerd.log" 60 docker_ready -- "${args[@]}"
}

# Static busybox, so the seed image can also run a shell.
busybox_path() {
  local p
  p=$(dpkg-query -L busybox-static 2>/dev/null | grep -m1 '/busybox$') || return 1
  [[ -x "$p" ]] && echo "$p"
}

# Writes a deterministic rootfs tarball: fixed mtimes/owners/order give the
# same layer digest on every machine.
make_seed_tar() {
  local out=$1 root="$DIR/seed-rootfs" bb
  rm -rf "$root"; mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  if bb=$(busybox_path); then
    cp "$bb" "$root/bin/busybox"
    for a in sh ls cat echo true sleep; do ln -s busybox "$root/bin/$a"; done
  elif is_ci; then
    log "busybox-static is not installed; the seed image needs it"; return 1
  else
    warn "busybox-static missing: seed image will hold files only (not runnable)"
  fi
  printf 'imageops test-bed seed image\n' >"$root/etc/imageops-seed"
  printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
  tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out" .
}

registry_has() { # registry repo tag
  curl -fs -o /dev/null \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$1/v2/$2/manifests/$3"
}

ensure_seed() {
  local reg="127.0.0.1:${PORT[registry_open]}" ref
  ref="$reg/$SEED_REPO:$SEED_TAG"
  if ! dk image inspect "$SEED_IMAGE" >/dev/null 2>&1; then
    make_seed_tar "$DIR/seed.tar" || return 1
    dk import --change 'CMD ["/bin/sh"]' --change 'LABEL org.opencontainers.image.title=imageops-seed' \
      - "$SEED_IMAGE" <"$DIR/seed.tar" >/dev/null || { log "docker import of the seed failed"; return 1; }
    log "seed: imported $SEED_IMAGE"
  fi
  if ! registry_has "$reg" "$SEED_REPO" "$SEED_TAG"; then
    dk tag "$SEED_IMAGE" "$ref" || return 1
    if ! dk push "$ref" >"$DIR/seed-push.log" 2>&1; then
      show_log_tail "$DIR/seed-push.log"; log "push of $ref failed"; return 1
    fi
    # Only the registry keeps the pushed name: tests pulling it really pull.
    dk rmi "$ref" >/dev/null || true
    log "seed: pushed $ref"
  fi
}
