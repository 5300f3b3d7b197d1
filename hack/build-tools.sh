#!/usr/bin/env bash
# Builds the Kubernetes test-bed binaries (kube-apiserver, kubectl, etcd,
# kube-controller-manager, kube-scheduler) from the pinned Go module in
# hack/tools, a patched kubelet from a copy of the same module, cri-dockerd
# (patched, from a copy of its module on the Go module proxy), a tiny static
# pause binary, and helm from its own module in
# hack/tools/helm (helm pins other k8s.io library versions than kube-apiserver),
# and links them into a bin directory. The helm cache directory also gets the
# ServiceMonitor and PrometheusRule CRDs of prometheus-operator (a Go module too),
# for chart tests. helm-docs (the chart's values table in docs/install.md, `make
# docs`) comes from its own module in hack/tools/helm-docs.
# containerd 2.x, its runc shim, ctr and crictl come from hack/tools/containerd
# and are linked as containerd2, containerd2-shim-runc-v2, ctr2 and crictl.
#
# Cache: the binaries live OUTSIDE the repo, in
#   ${IMAGEOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imageops/tools}/<key>/
#   ${IMAGEOPS_TOOLS_CACHE:-...}/helm-<helm key>/
#   ${IMAGEOPS_TOOLS_CACHE:-...}/helm-docs-<helm-docs key>/
#   ${IMAGEOPS_TOOLS_CACHE:-...}/node-<node key>/     (kubelet, pause: patched)
#   ${IMAGEOPS_TOOLS_CACHE:-...}/cri-dockerd-<key>/   (patched)
#   ${IMAGEOPS_TOOLS_CACHE:-...}/containerd-<containerd key>/
# where <key> hashes hack/tools/go.mod + go.sum + the build recipe below (the
# helm key likewise for hack/tools/helm), so every clone on a machine shares one
# build and a bump of the pins rebuilds only what changed.
# A flock serialises concurrent builds (two clones running `up` at once): the
# machine has few cores and a second parallel build would only slow both.
#
# Usage: hack/build-tools.sh [BIN_DIR]
#   BIN_DIR defaults to ${IMAGEOPS_TESTENV_DIR:-<repo>/.testenv}/bin; it gets
#   symlinks to the cached binaries. Prints the cache directory on stdout.
# Env: IMAGEOPS_TOOLS_CACHE  cache root (see above)
#      IMAGEOPS_GO           go binary to use; "download" forces fetching a Go
#                            toolchain from the Go module proxy (fresh Debian 12
#                            only ships go1.19, too old for Kubernetes 1.35).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TOOLS_MOD="$REPO/hack/tools"
HELM_MOD="$REPO/hack/tools/helm"
# imageops-health: kstatus, Flux's ssa WaitForSet and Argo CD's Lua health
# runner on live objects (tests/e2e/test_gitops.py); its own module and key.
HEALTH_MOD="$REPO/hack/tools/health"
# helm-docs writes the values table of docs/install.md from values.yaml's
# `# --` comments (make docs; tests/unit/test_docs.py checks the drift).
HELM_DOCS_MOD="$REPO/hack/tools/helm-docs"
# containerd 2.x (+ its runc shim and ctr) and crictl for the bed's containerd
# nodes: a module and cache key of their own, so pinning them never rebuilds
# the Kubernetes binaries.
CONTAINERD_MOD="$REPO/hack/tools/containerd"
CONTAINERD_RECIPE_VERSION=1
# Bump when the build command/flags change so caches keyed on go.mod refresh.
RECIPE_VERSION=2
# Toolchain fetched when no usable Go (>= 1.21, which can self-upgrade to the
# go.mod version) is installed.
BOOTSTRAP_GO=go1.25.0
# The ServiceMonitor CRD the chart's optional ServiceMonitor is checked against
# (tests/e2e/test_chart.py), taken from this prometheus-operator module; it lands
# next to the helm binary.
PROM_OPERATOR_VERSION=v0.85.0
# The CRDs taken from it (tests/e2e/test_chart.py, tests/e2e/test_monitoring.py).
PROM_CRDS=(servicemonitors prometheusrules)
# cri-dockerd drives the bed's dockerd as the CRI of the node 127.0.0.1.
CRI_DOCKERD_VERSION=v0.4.3
NODE_RECIPE_VERSION=1

log() { printf 'build-tools: %s\n' "$*" >&2; }
die() { printf 'build-tools: ERROR: %s\n' "$*" >&2; exit 1; }

# Module version of $1 as pinned in ${2:-hack/tools}/go.mod (require lines only).
pinned_version() {
  awk -v m="$1" '($1 == m && $2 ~ /^v/) || ($1 == "require" && $2 == m) { print ($1 == m ? $2 : $3); exit }' \
    "${2:-$TOOLS_MOD}/go.mod"
}

# ldflags stamp the real version: without them kube-apiserver reports
# v0.0.0-master, which clients (kubectl skew warnings, kopf) misread.
k8s_ldflags() {
  local v major minor pkg flags="-s -w"
  v=$(pinned_version k8s.io/kubernetes)
  [[ -n "$v" ]] || die "k8s.io/kubernetes not pinned in $TOOLS_MOD/go.mod"
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean"
  done
  printf '%s' "$flags"
}

# Helm's Makefile stamps its version and the Kubernetes version it reports to
# charts (.Capabilities.KubeVersion) and to `helm lint`; same here.
helm_ldflags() {
  local v kv minor pkg flags="-s -w"
  v=$(pinned_version helm.sh/helm/v3 "$HELM_MOD")
  kv=$(pinned_version k8s.io/client-go "$HELM_MOD")
  [[ -n "$v" && -n "$kv" ]] || die "helm.sh/helm/v3 or k8s.io/client-go not pinned in $HELM_MOD/go.mod"
  minor=${kv#v0.}; minor=${minor%%.*}
  flags+=" -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  printf '%s' "$flags"
}

helm_cache_key() {
  { cat "$HELM_MOD/go.mod" "$HELM_MOD/go.sum"
    printf 'recipe=%s ldflags=%s arch=%s prometheus-operator=%s\n' "$RECIPE_VERSION" "$(helm_ldflags)" \
      "$(uname -m)" "$PROM_OPERATOR_VERSION"
  } | sha256sum | cut -c1-16
}

health_cache_key() {
  { cat "$HEALTH_MOD/go.mod" "$HEALTH_MOD/go.sum" "$HEALTH_MOD"/*.go
    printf 'recipe=%s arch=%s\n' "$RECIPE_VERSION" "$(uname -m)"
  } | sha256sum | cut -c1-16
}

helm_docs_cache_key() {
  { cat "$HELM_DOCS_MOD/go.mod" "$HELM_DOCS_MOD/go.sum"
    printf 'recipe=%s ldflags=%s arch=%s\n' "$RECIPE_VERSION" "$(helm_docs_ldflags)" "$(uname -m)"
  } | sha256sum | cut -c1-16
}

# helm-docs --version reports these (its release build stamps them the same way).
helm_docs_ldflags() {
  local v
  v=$(pinned_version github.com/norwoodj/helm-docs "$HELM_DOCS_MOD")
  [[ -n "$v" ]] || die "github.com/norwoodj/helm-docs not pinned in $HELM_DOCS_MOD/go.mod"
  printf '%s' "-s -w -X main.version=${v#v}"
}

cache_key() {
  { cat "$TOOLS_MOD/go.mod" "$TOOLS_MOD/go.sum"
    printf 'recipe=%s ldflags=%s arch=%s\n' "$RECIPE_VERSION" "$(k8s_ldflags)" "$(uname -m)"
  } | sha256sum | cut -c1-16
}

# containerd and crictl report "+unknown"/"unknown" without these.
containerd_ldflags() {
  local cv tv
  cv=$(pinned_version github.com/containerd/containerd/v2 "$CONTAINERD_MOD")
  tv=$(pinned_version sigs.k8s.io/cri-tools "$CONTAINERD_MOD")
  [[ -n "$cv" && -n "$tv" ]] || die "containerd/v2 or cri-tools not pinned in $CONTAINERD_MOD/go.mod"
  printf '%s' "-s -w -X github.com/containerd/containerd/v2/version.Version=$cv" \
    " -X sigs.k8s.io/cri-tools/pkg/version.Version=${tv#v}"
}

containerd_cache_key() {
  { cat "$CONTAINERD_MOD/go.mod" "$CONTAINERD_MOD/go.sum"
    printf 'recipe=%s ldflags=%s arch=%s\n' "$CONTAINERD_RECIPE_VERSION" "$(containerd_ldflags)" "$(uname -m)"
  } | sha256sum | cut -c1-16
}

# Minor version of a go binary (e.g. 26 for go1.26.8), 0 when unusable.
go_minor() {
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || { echo 0; return; }
  v=${v#go1.}; v=${v%%.*}; v=${v%%[!0-9]*}
  echo "${v:-0}"
}

# Fetches $BOOTSTRAP_GO as the golang.org/toolchain module (what `go` itself
# does for GOTOOLCHAIN switching) into the cache; prints the go binary path.
download_go() {
  local root="$1" dest proxy zip arch
  dest="$root/go/$BOOTSTRAP_GO"
  if [[ -x "$dest/bin/go" ]]; then echo "$dest/bin/go"; return; fi
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) die "unsupported arch $(uname -m)" ;; esac
  proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%[,|]*}
  [[ "$proxy" == http* ]] || proxy=https://proxy.golang.org
  command -v unzip >/dev/null || die "unzip is needed to unpack the Go toolchain (apt-get install unzip)"
  log "no Go >= 1.21 found; fetching $BOOTSTRAP_GO from $proxy"
  mkdir -p "$root/go"
  zip=$(mktemp "$root/go/dl.XXXXXX")
  curl -fsSL --retry 3 -o "$zip" \
    "$proxy/golang.org/toolchain/@v/v0.0.1-$BOOTSTRAP_GO.linux-$arch.zip" \
    || die "download of Go toolchain $BOOTSTRAP_GO failed"
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  unzip -q "$zip" -d "$dest.tmp"; rm -f "$zip"
  mv "$dest.tmp/golang.org/toolchain@v0.0.1-$BOOTSTRAP_GO.linux-$arch" "$dest"
  rm -rf "$dest.tmp"
  # Module zips do not carry file modes.
  chmod +x "$dest"/bin/* "$dest"/pkg/tool/*/*
  echo "$dest/bin/go"
}

find_go() {
  local root="$1" cand
  if [[ -n "${IMAGEOPS_GO:-}" ]]; then
    if [[ "$IMAGEOPS_GO" == download ]]; then download_go "$root"; return; fi
    [[ -x "$IMAGEOPS_GO" ]] || die "IMAGEOPS_GO=$IMAGEOPS_GO is not executable"
    echo "$IMAGEOPS_GO"; return
  fi
  for cand in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [[ -n "$cand" && -x "$cand" ]] && (( $(go_minor "$cand") >= 21 )); then
      echo "$cand"; return
    fi
  done
  download_go "$root"
}

build_into() {
  local out="$1" gobin="$2"
  log "building kube-apiserver, kubectl, etcd, kube-controller-manager, kube-scheduler with $("$gobin" version) (log: $out.log)"
  # Same flags as a plain `go build` (no -trimpath) so the shared Go build
  # cache is reused; only the link step sees the ldflags.
  if ! (cd "$TOOLS_MOD" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -ldflags "$(k8s_ldflags)" -o "$out/" \
        go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
        k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
        >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build failed (full log: $out.log)"
  fi
  # The etcd main package's binary is named after the module path element
  # before /v3 ("server"); older Go versions name it "v3".
  if [[ -f "$out/server" ]]; then mv "$out/server" "$out/etcd"; fi
  if [[ -f "$out/v3" ]]; then mv "$out/v3" "$out/etcd"; fi
}

build_helm_into() {
  local out="$1" gobin="$2"
  log "building helm $(pinned_version helm.sh/helm/v3 "$HELM_MOD") with $("$gobin" version) (log: $out.log)"
  if ! (cd "$HELM_MOD" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -ldflags "$(helm_ldflags)" -o "$out/helm" helm.sh/helm/v3/cmd/helm \
        >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build of helm failed (full log: $out.log)"
  fi
  fetch_prom_crds "$out" "$gobin" "$out.log"
}

# fetch_prom_crds DIR GO LOG: copies the PROM_CRDS of prometheus-operator into DIR.
# `go mod download` verifies the module against the checksum database.
fetch_prom_crds() {
  local out=$1 gobin=$2 logf=$3 mod c
  mod=$(cd "$HELM_MOD" && GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" "$gobin" mod download -json \
        "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" 2>>"$logf" \
        | awk -F'"' '$2 == "Dir" { print $4 }') || true
  [[ -n "$mod" ]] || die "could not fetch prometheus-operator $PROM_OPERATOR_VERSION (log: $logf)"
  for c in "${PROM_CRDS[@]}"; do
    cp "$mod/example/prometheus-operator-crd/monitoring.coreos.com_$c.yaml" "$out/"
  done
}

# A helm cache built before a CRD joined PROM_CRDS gets it added (helm is not rebuilt).
ensure_prom_crds() {
  local root=$1 dir=$2 c missing=0
  for c in "${PROM_CRDS[@]}"; do
    [[ -f "$dir/monitoring.coreos.com_$c.yaml" ]] || missing=1
  done
  (( missing )) || return 0
  exec 9>"$root/.lock"
  flock 9
  fetch_prom_crds "$dir" "$(find_go "$root")" "$dir/build.log"
  exec 9>&-
}

build_helm_docs_into() {
  local out="$1" gobin="$2"
  log "building helm-docs $(pinned_version github.com/norwoodj/helm-docs "$HELM_DOCS_MOD") with $("$gobin" version) (log: $out.log)"
  if ! (cd "$HELM_DOCS_MOD" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -ldflags "$(helm_docs_ldflags)" -o "$out/helm-docs" \
        github.com/norwoodj/helm-docs/cmd/helm-docs >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build of helm-docs failed (full log: $out.log)"
  fi
}

build_health_into() {
  local out="$1" gobin="$2"
  log "building imageops-health with $("$gobin" version) (log: $out.log)"
  if ! (cd "$HEALTH_MOD" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -ldflags "-s -w" -o "$out/imageops-health" . >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build of imageops-health failed (full log: $out.log)"
  fi
}

# ---- node binaries (kubelet, cri-dockerd, pause) ----------------------------
# The VM's capability bounding set lacks CAP_SYS_RESOURCE, so writing a negative
# oom_score_adj fails and runc aborts ("can't get final child's PID from pipe").
# The patches below raise the two hard-coded negative scores to 0 and stop
# cri-dockerd from re-scoring every dockerd/containerd of the machine every
# 5 minutes (it must never touch processes the bed did not start). They are
# applied to copies of the module sources, never to the shared module cache,
# and their text is part of the cache keys.

# patch_line FILE OLD NEW: replace one exact line, failing when it is absent.
patch_line() {
  local f=$1 old=$2 new=$3
  grep -qxF -- "$old" "$f" || die "patch: line not found in $f: $old"
  OLD=$old NEW=$new awk '$0 == ENVIRON["OLD"] { print ENVIRON["NEW"]; next } { print }' "$f" >"$f.new"
  mv "$f.new" "$f"
}

patch_kubelet() { # SRC (a copy of k8s.io/kubernetes)
  patch_line "$1/pkg/kubelet/qos/policy.go" \
    $'\tguaranteedOOMScoreAdj int = -997' $'\tguaranteedOOMScoreAdj int = 0'
}

patch_cri_dockerd() { # SRC (a copy of github.com/Mirantis/cri-dockerd)
  patch_line "$1/core/sandbox_helpers.go" \
    $'\tdefaultSandboxOOMAdj int = -998' $'\tdefaultSandboxOOMAdj int = 0'
  patch_line "$1/containermanager/container_manager_linux.go" \
    $'\tgo wait.Until(m.doWork, 5*time.Minute, wait.NeverStop)' \
    $'\t_, _ = wait.Until, time.Minute // imageops: never re-score the machine\'s dockerd/containerd'
}

node_cache_key() {
  { cat "$TOOLS_MOD/go.mod" "$TOOLS_MOD/go.sum" "$TOOLS_MOD/pause/main.go"
    printf 'recipe=%s ldflags=%s arch=%s\n' "$NODE_RECIPE_VERSION" "$(k8s_ldflags)" "$(uname -m)"
    declare -f patch_line patch_kubelet build_node_into
  } | sha256sum | cut -c1-16
}

cri_dockerd_cache_key() {
  { printf 'cri-dockerd=%s recipe=%s arch=%s\n' "$CRI_DOCKERD_VERSION" "$NODE_RECIPE_VERSION" "$(uname -m)"
    declare -f patch_line patch_cri_dockerd build_cri_dockerd_into
  } | sha256sum | cut -c1-16
}

# mod_dir MODULE@VERSION: downloads (verified against the checksum database)
# and prints the module's directory in the module cache.
mod_dir() {
  (cd "$TOOLS_MOD" && GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" "$GOBIN_USED" mod download -json "$1" \
    | awk -F'"' '$2 == "Dir" { print $4 }')
}

# kubelet (patched) from a copy of k8s.io/kubernetes, used through a directory
# replace in a copy of hack/tools/go.mod; and the pause binary.
build_node_into() {
  local out=$1 gobin=$2 src=$1.src kdir
  GOBIN_USED=$gobin
  kdir=$(mod_dir "k8s.io/kubernetes@$(pinned_version k8s.io/kubernetes)")
  [[ -d "$kdir" ]] || die "could not fetch k8s.io/kubernetes"
  log "building patched kubelet and pause with $("$gobin" version) (log: $out.log)"
  rm -rf "$src"; mkdir -p "$src/mod"
  cp -r "$kdir" "$src/kubernetes"
  chmod -R u+w "$src/kubernetes"
  patch_kubelet "$src/kubernetes"
  cp "$TOOLS_MOD/go.mod" "$TOOLS_MOD/go.sum" "$src/mod/"
  printf '\nreplace k8s.io/kubernetes => ../kubernetes\n' >>"$src/mod/go.mod"
  if ! (cd "$src/mod" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -ldflags "$(k8s_ldflags)" -o "$out/kubelet" k8s.io/kubernetes/cmd/kubelet \
        >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build of kubelet failed (full log: $out.log)"
  fi
  rm -rf "$src"
  (cd "$TOOLS_MOD" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
     "$gobin" build -ldflags "-s -w" -o "$out/pause" ./pause >>"$out.log" 2>&1) \
    || die "go build of pause failed (log: $out.log)"
}

build_cri_dockerd_into() {
  local out=$1 gobin=$2 src=$1.src dir
  GOBIN_USED=$gobin
  dir=$(mod_dir "github.com/Mirantis/cri-dockerd@$CRI_DOCKERD_VERSION")
  [[ -d "$dir" ]] || die "could not fetch cri-dockerd $CRI_DOCKERD_VERSION"
  log "building patched cri-dockerd $CRI_DOCKERD_VERSION with $("$gobin" version) (log: $out.log)"
  # Its go.mod has replace lines, so `go install mod@version` refuses: build a copy.
  rm -rf "$src"; cp -r "$dir" "$src"; chmod -R u+w "$src"
  patch_cri_dockerd "$src"
  if ! (cd "$src" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -ldflags "-s -w -X github.com/Mirantis/cri-dockerd/cmd/version.Version=${CRI_DOCKERD_VERSION#v}" \
        -o "$out/cri-dockerd" . >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build of cri-dockerd failed (full log: $out.log)"
  fi
  rm -rf "$src"
}

build_containerd_into() {
  local out="$1" gobin="$2" m=github.com/containerd/containerd/v2/cmd
  log "building containerd $(pinned_version github.com/containerd/containerd/v2 "$CONTAINERD_MOD")," \
    "crictl $(pinned_version sigs.k8s.io/cri-tools "$CONTAINERD_MOD") with $("$gobin" version) (log: $out.log)"
  # no_btrfs: the btrfs snapshotter needs cgo and btrfs headers; the bed uses overlayfs.
  if ! (cd "$CONTAINERD_MOD" && CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS=-buildvcs=false \
        "$gobin" build -tags no_btrfs -ldflags "$(containerd_ldflags)" -o "$out/" \
        "$m/containerd" "$m/containerd-shim-runc-v2" "$m/ctr" sigs.k8s.io/cri-tools/cmd/crictl \
        >"$out.log" 2>&1); then
    tail -n 30 "$out.log" >&2
    die "go build of containerd/crictl failed (full log: $out.log)"
  fi
}

all_executable() { # DIR NAME...
  local d=$1 b
  shift
  for b in "$@"; do [[ -x "$d/$b" ]] || return 1; done
}

# cached_build ROOT DIR BUILD_FN NAME...: runs BUILD_FN into DIR unless every
# NAME is already there; under $ROOT/.lock, re-checking after the wait.
cached_build() {
  local root=$1 dir=$2 build=$3 gobin start
  shift 3
  all_executable "$dir" "$@" && return 0
  exec 9>"$root/.lock"
  if ! flock -n 9; then
    log "another build holds $root/.lock; waiting for it"
    flock 9
  fi
  # Re-check: the build we waited for may have produced exactly this key.
  if ! all_executable "$dir" "$@"; then
    gobin=$(find_go "$root")
    start=$SECONDS
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    "$build" "$dir.tmp" "$gobin"
    mv "$dir.tmp.log" "$dir.tmp/build.log"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
    log "built $* in $((SECONDS - start))s into $dir"
  fi
  exec 9>&-
  all_executable "$dir" "$@" || die "missing one of $* in $dir after build"
}

main() {
  local bin_dir="${1:-${IMAGEOPS_TESTENV_DIR:-$REPO/.testenv}/bin}"
  local root="${IMAGEOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imageops/tools}"
  local dir helm_dir helm_docs_dir health_dir node_dir crid_dir ctd_dir b
  dir="$root/$(cache_key)"
  helm_dir="$root/helm-$(helm_cache_key)"
  helm_docs_dir="$root/helm-docs-$(helm_docs_cache_key)"
  health_dir="$root/health-$(health_cache_key)"
  node_dir="$root/node-$(node_cache_key)"
  crid_dir="$root/cri-dockerd-$(cri_dockerd_cache_key)"
  ctd_dir="$root/containerd-$(containerd_cache_key)"
  mkdir -p "$root"
  cached_build "$root" "$dir" build_into kube-apiserver kubectl etcd kube-controller-manager kube-scheduler
  cached_build "$root" "$helm_dir" build_helm_into helm
  ensure_prom_crds "$root" "$helm_dir"
  for b in "${PROM_CRDS[@]}"; do
    [[ -f "$helm_dir/monitoring.coreos.com_$b.yaml" ]] || die "missing the $b CRD in $helm_dir"
  done
  cached_build "$root" "$helm_docs_dir" build_helm_docs_into helm-docs
  cached_build "$root" "$health_dir" build_health_into imageops-health
  cached_build "$root" "$node_dir" build_node_into kubelet pause
  cached_build "$root" "$crid_dir" build_cri_dockerd_into cri-dockerd
  cached_build "$root" "$ctd_dir" build_containerd_into containerd containerd-shim-runc-v2 ctr crictl
  mkdir -p "$bin_dir"
  for b in kube-apiserver kubectl etcd kube-controller-manager kube-scheduler; do
    ln -sfn "$dir/$b" "$bin_dir/$b"
  done
  for b in kubelet pause; do ln -sfn "$node_dir/$b" "$bin_dir/$b"; done
  ln -sfn "$crid_dir/cri-dockerd" "$bin_dir/cri-dockerd"
  ln -sfn "$helm_dir/helm" "$bin_dir/helm"
  ln -sfn "$helm_docs_dir/helm-docs" "$bin_dir/helm-docs"
  ln -sfn "$health_dir/imageops-health" "$bin_dir/imageops-health"
  # Suffixed names: Debian's containerd 1.6 and ctr stay what PATH finds first.
  ln -sfn "$ctd_dir/containerd" "$bin_dir/containerd2"
  ln -sfn "$ctd_dir/containerd-shim-runc-v2" "$bin_dir/containerd2-shim-runc-v2"
  ln -sfn "$ctd_dir/ctr" "$bin_dir/ctr2"
  ln -sfn "$ctd_dir/crictl" "$bin_dir/crictl"
  echo "$dir"
}

main "$@"
