#!/usr/bin/env bash
# `make demo`: the test bed up, the operator running (every role, as the agent of the
# bed's node 127.0.0.1, whose kubelet runs on the same Docker engine), the examples in
# examples/ applied in order, their statuses printed; then the point of pre-pulling:
# a Pod's start time with the image pre-pulled by imageops against the same Pod
# pulling its image through the kubelet.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash hack/testenv.sh up
# shellcheck disable=SC1091
source .testenv/env.sh
export PYTHONPATH=$PWD/operator
ns=imageops-demo
log=.testenv/demo-operator.log

kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create secret docker-registry regcred -n "$ns" --docker-server="$IMAGEOPS_AUTH_REGISTRY" \
  --docker-username="$IMAGEOPS_AUTH_USER" --docker-password="$IMAGEOPS_AUTH_PASSWORD" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Re-running the demo runs the examples again: start from fresh objects.
kubectl delete imgwf,imgsess,imgop --all -n "$ns" --wait=true >/dev/null

# The bed's node on the bed's dockerd (hack/lib/testenv-node.sh): what the operator
# pulls there, that node's kubelet finds "already present on machine".
node=${IMAGEOPS_NODE:?the test bed has no node (hack/testenv.sh up)}
"$VENV/bin/imageops" run --node-name "$node" --metrics-port "${DEMO_METRICS_PORT:-18080}" \
  --namespace "$ns" >"$log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true; wait $operator 2>/dev/null || true' EXIT
echo "operator running (pid $operator, log $log)"

render() { "$VENV/bin/python" -c 'import os,sys; print(os.path.expandvars(open(sys.argv[1]).read()))' "$1"; }
# apply FILE, then wait until each named object (kind/name) is Ready.
apply_and_wait() {
  local file=$1; shift
  echo "--- applying $file"
  render "$file" | kubectl apply -f -
  for obj in "$@"; do
    if ! kubectl wait -n "$ns" "$obj" --for=condition=Ready --timeout=180s >/dev/null; then
      kubectl get -n "$ns" "$obj" -o yaml
      echo "$obj did not become Ready; operator log: $log" >&2
      exit 1
    fi
    echo "    $obj Ready"
  done
}

apply_and_wait examples/01-pull.yaml imgop/pull-seed
apply_and_wait examples/02-tag.yaml imgop/tag-release
apply_and_wait examples/03-push.yaml imgop/push-release
apply_and_wait examples/workflow-promotion.yaml imgwf/promote-tiny
apply_and_wait examples/session.yaml imgop/release-pull imgop/release-cached imgop/release-push
# The warm-up runs on every node labelled imageops.dev/pool=build: the bed's node.
kubectl label node "$node" imageops.dev/pool=build --overwrite >/dev/null
apply_and_wait examples/workflow-warmup.yaml imgwf/warm-build-pool

# shellcheck source=hack/lib/demo-prepull.sh
source hack/lib/demo-prepull.sh
prepull_demo "$ns" "$node"
wait_sessions_settled "$ns"

echo
kubectl get imageops -n "$ns"
echo
kubectl get imgop -n "$ns" -o custom-columns='NAME:.metadata.name,ACTION:.spec.action,PHASE:.status.phase,DIGEST:.status.digest,SECONDS:.status.durationSeconds'
echo
echo "session release:"
kubectl get imgsess release -n "$ns" -o jsonpath='{"  jobs: "}{.status.jobs}{"\n  actions: "}{.status.actions}{"\n  cacheHitRatio: "}{.status.cacheHitRatio}{"\n"}'
echo
prepull_report
echo
echo "The test bed stays up: 'source .testenv/env.sh' to use it, 'make testenv-down' to stop it."
