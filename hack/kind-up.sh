#!/usr/bin/env bash
# A local kind cluster running imageops from this checkout (needs internet access for
# the kind node image and python:3.11-slim; see docs/install.md):
#   1. creates a one-node kind cluster (unless it exists) with the host's Docker socket
#      mounted into the node at /var/run/docker.sock: the agent pulls, pushes and tags
#      through the host's Docker engine, so `docker images` on the host shows its work;
#   2. builds the image from the Dockerfile and loads it into the nodes (kind load);
#   3. installs or upgrades the chart (charts/imageops) and runs `helm test`.
#
# Usage: hack/kind-up.sh [up|down]
# Env:   KIND_CLUSTER_NAME  cluster name (default imageops)
#        KIND_NODE_IMAGE    kindest/node image (default: kind's own default)
#        IMAGE              image reference to build and load (default imageops:dev)
#        BASE_IMAGE         the Dockerfile's base (default python:3.11-slim)
#        NAMESPACE          release namespace (default imageops-system)
#        DOCKER_SOCK        the host's Docker socket (default /var/run/docker.sock)
#        DOCKER_GID         its group id (default: stat of DOCKER_SOCK); Docker Desktop
#                           users: the gid inside the Docker VM, often 0 or 1001
#        HELM_ARGS          extra arguments for helm upgrade --install
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CLUSTER=${KIND_CLUSTER_NAME:-imageops}
IMAGE=${IMAGE:-imageops:dev}
NAMESPACE=${NAMESPACE:-imageops-system}
DOCKER_SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
CONTEXT=kind-$CLUSTER
RELEASE=imageops

log() { printf 'kind-up: %s\n' "$*" >&2; }
die() { printf 'kind-up: ERROR: %s\n' "$*" >&2; exit 1; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is not installed (see docs/install.md)"
  done
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx -- "$CLUSTER"; }

create_cluster() {
  local config args=()
  if cluster_exists; then
    log "cluster $CLUSTER exists; reusing it"
    return 0
  fi
  # One node (kind leaves a single control-plane node untainted, so the agent runs on
  # it). More nodes would all share the host's one Docker engine.
  config=$(mktemp)
  cat >"$config" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts:
      # The agent's hostPath volume (agent.dockerSocket) finds the host's engine here.
      - hostPath: $DOCKER_SOCK
        containerPath: /var/run/docker.sock
EOF
  args=(create cluster --name "$CLUSTER" --config "$config" --wait 180s)
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then args+=(--image "$KIND_NODE_IMAGE"); fi
  log "creating cluster $CLUSTER"
  if ! kind "${args[@]}"; then
    rm -f "$config"
    die "kind create cluster failed"
  fi
  rm -f "$config"
}

build_and_load() {
  local gid=$1
  local args=(build --build-arg "DOCKER_GID=$gid" -t "$IMAGE")
  if [[ -n "${BASE_IMAGE:-}" ]]; then args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
  log "building $IMAGE"
  docker "${args[@]}" "$REPO"
  log "loading $IMAGE into the nodes of $CLUSTER"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
}

install_chart() {
  local gid=$1 repository tag extra=()
  repository=${IMAGE%:*}
  tag=${IMAGE##*:}
  [[ "$repository" != "$IMAGE" ]] || die "IMAGE must be repository:tag (got $IMAGE)"
  if [[ -n "${HELM_ARGS:-}" ]]; then read -r -a extra <<<"$HELM_ARGS"; fi
  kubectl --context "$CONTEXT" create namespace "$NAMESPACE" --dry-run=client -o yaml \
    | kubectl --context "$CONTEXT" apply -f - >/dev/null
  # The agent mounts a hostPath (the Docker socket).
  kubectl --context "$CONTEXT" label namespace "$NAMESPACE" --overwrite \
    pod-security.kubernetes.io/enforce=privileged >/dev/null
  log "installing the chart as release $RELEASE in $NAMESPACE"
  # pullPolicy Never: the image exists only in the nodes (kind load), never in a registry.
  helm --kube-context "$CONTEXT" upgrade --install "$RELEASE" "$REPO/charts/imageops" \
    --namespace "$NAMESPACE" \
    --set image.repository="$repository" --set image.tag="$tag" --set image.pullPolicy=Never \
    --set agent.dockerGid="$gid" \
    --wait --timeout 5m "${extra[@]}"
  helm --kube-context "$CONTEXT" test "$RELEASE" --namespace "$NAMESPACE" --logs
}

up() {
  local gid
  need kind kubectl helm docker
  [[ -S "$DOCKER_SOCK" ]] || die "$DOCKER_SOCK is not a socket (set DOCKER_SOCK)"
  gid=${DOCKER_GID:-$(stat -c %g "$DOCKER_SOCK")}
  [[ "$gid" =~ ^[0-9]+$ ]] || die "DOCKER_GID must be a number (got $gid)"
  create_cluster
  build_and_load "$gid"
  install_chart "$gid"
  cat <<EOF

imageops runs in kind cluster $CLUSTER (context $CONTEXT), namespace $NAMESPACE.
  kubectl --context $CONTEXT -n $NAMESPACE get pods -o wide
  kubectl --context $CONTEXT apply -f $REPO/examples/   # edit the registry names first
  kubectl --context $CONTEXT get imgop -A
Operations run on the host's Docker engine (docker images). Remove: $0 down
EOF
}

down() {
  need kind
  if cluster_exists; then
    kind delete cluster --name "$CLUSTER"
  else
    log "no cluster $CLUSTER"
  fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 64 ;;
esac
