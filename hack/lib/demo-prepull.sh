# shellcheck shell=bash
# The pre-pull part of `make demo` (hack/demo.sh): two images of the same size in the
# bed's registry; one is pulled onto the node by an ImageOperation, then a Pod using it
# with imagePullPolicy: Never starts; the other Pod pulls its image through the kubelet.
# Expects kubectl, docker (DOCKER_HOST) and IMAGEOPS_* from .testenv/env.sh.

DEMO_LAYERS=${DEMO_LAYERS:-5}
DEMO_LAYER_MB=${DEMO_LAYER_MB:-8}
declare -A DEMO_T=()

# demo_image REF: the bed's seed (busybox) plus random layers, pushed, then removed
# from the engine with its layers (so that only a real pull brings it back).
demo_image() {
  local ref=$1 ctx i
  ctx=$(mktemp -d)
  printf 'FROM %s\n' "$IMAGEOPS_SEED_IMAGE" >"$ctx/Dockerfile"
  for i in $(seq 1 "$DEMO_LAYERS"); do
    head -c "$((DEMO_LAYER_MB * 1024 * 1024))" /dev/urandom >"$ctx/blob$i"
    printf 'COPY blob%s /blob%s\n' "$i" "$i" >>"$ctx/Dockerfile"
  done
  if ! docker build -q --network host -t "$ref" "$ctx" >"$ctx.log" 2>&1; then
    cat "$ctx.log" >&2; rm -rf "$ctx" "$ctx.log"; return 1
  fi
  rm -rf "$ctx" "$ctx.log"
  docker push -q "$ref" >/dev/null
  docker rmi "$ref" >/dev/null
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# demo_pod NS NAME NODE IMAGE POLICY: seconds from creation to Running.
demo_pod() {
  local ns=$1 name=$2 node=$3 image=$4 policy=$5 t0
  kubectl delete pod -n "$ns" "$name" --ignore-not-found --grace-period=0 --force >/dev/null 2>&1
  t0=$(now)
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $ns}
spec:
  nodeName: "$node"
  terminationGracePeriodSeconds: 0
  containers:
  - {name: app, image: "$image", imagePullPolicy: $policy, command: [sleep, "3600"]}
YAML
  if ! kubectl wait -n "$ns" "pod/$name" --for=jsonpath='{.status.phase}'=Running --timeout=180s >/dev/null; then
    kubectl describe pod -n "$ns" "$name" >&2
    return 1
  fi
  elapsed "$t0" "$(now)"
}

prepull_demo() {
  local ns=$1 node=$2 tag t0 pre kube
  tag=$(date +%s)
  pre="$IMAGEOPS_REGISTRY/demo/prepulled:$tag"
  kube="$IMAGEOPS_REGISTRY/demo/kubelet-pulled:$tag"
  echo "--- pre-pulling onto node $node ($DEMO_LAYERS layers x $DEMO_LAYER_MB MB, random data)"
  demo_image "$pre"
  demo_image "$kube"
  t0=$(now)
  kubectl apply -f - >/dev/null <<YAML
apiVersion: imageops.dev/v1alpha1
kind: ImageOperation
metadata: {name: prepull, namespace: $ns}
spec: {action: Pull, image: "$pre", nodeName: "$node", pullPolicy: Always}
YAML
  kubectl wait -n "$ns" imgop/prepull --for=condition=Ready --timeout=300s >/dev/null
  DEMO_T[prepull]=$(elapsed "$t0" "$(now)")
  echo "    imgop/prepull Ready: $pre on $node in ${DEMO_T[prepull]}s (before any Pod needs it)"
  DEMO_T[never]=$(demo_pod "$ns" demo-prepulled "$node" "$pre" Never)
  echo "    pod/demo-prepulled Running (imagePullPolicy: Never): ${DEMO_T[never]}s"
  DEMO_T[kubelet]=$(demo_pod "$ns" demo-kubelet-pull "$node" "$kube" IfNotPresent)
  echo "    pod/demo-kubelet-pull Running (the kubelet pulls): ${DEMO_T[kubelet]}s"
  kubectl get events -n "$ns" --field-selector involvedObject.name=demo-prepulled \
    -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers | grep -m1 Pulled | sed 's/^/    /'
  kubectl delete pod -n "$ns" demo-prepulled demo-kubelet-pull --grace-period=0 --force >/dev/null 2>&1 || true
}

# Waits until every ImageSession of NS counts no active job: the statistics of a
# finished workflow's session are updated shortly after the workflow itself.
wait_sessions_settled() {
  local ns=$1 i active
  for i in $(seq 1 120); do
    active=$(kubectl get imgsess -n "$ns" -o jsonpath='{range .items[*]}{.status.jobs.active}{" "}{end}')
    [[ -z "$(tr -d ' 0' <<<"$active")" ]] && return 0
    sleep 0.5
  done
  echo "sessions still have active jobs after 60s: $active" >&2
}

prepull_report() {
  printf 'Pod start on node %s (%s layers x %s MB):\n' "$IMAGEOPS_NODE" "$DEMO_LAYERS" "$DEMO_LAYER_MB"
  printf '  %-44s %8ss\n' "image pre-pulled by imageops (Never)" "${DEMO_T[never]}" \
    "the kubelet pulls the image (IfNotPresent)" "${DEMO_T[kubelet]}"
  printf '  %-44s %8ss\n' "(the pre-pull itself, done ahead of time)" "${DEMO_T[prepull]}"
}
