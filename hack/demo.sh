#!/usr/bin/env bash
# `make demo`: the test bed up, the operator running (every role, this machine as
# its node), the examples in examples/ applied in order, their statuses printed.
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
kubectl delete imgop --all -n "$ns" --wait=true >/dev/null

"$VENV/bin/imageops" run --node-name "$(hostname)" --metrics-port "${DEMO_METRICS_PORT:-18080}" \
  --namespace "$ns" >"$log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true; wait $operator 2>/dev/null || true' EXIT
echo "operator running (pid $operator, log $log)"

render() { "$VENV/bin/python" -c 'import os,sys; print(os.path.expandvars(open(sys.argv[1]).read()))' "$1"; }
for example in examples/0*.yaml; do
  name=$(awk '/^  name:/ {print $2; exit}' "$example")
  echo "--- applying $example ($name)"
  render "$example" | kubectl apply -f -
  if ! kubectl wait -n "$ns" "imgop/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s >/dev/null; then
    kubectl get imgop -n "$ns" "$name" -o yaml
    echo "example $name did not succeed; operator log: $log" >&2
    exit 1
  fi
done

echo
kubectl get imgop -n "$ns" -o wide
echo
kubectl get imgop -n "$ns" -o custom-columns='NAME:.metadata.name,ACTION:.spec.action,PHASE:.status.phase,DIGEST:.status.digest,SECONDS:.status.durationSeconds'
echo
echo "The test bed stays up: 'source .testenv/env.sh' to use it, 'make testenv-down' to stop it."
