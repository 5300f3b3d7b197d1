#!/usr/bin/env bash
# Scale benchmark: a warm-up Workflow fanned out to 10, 100 and 1000 nodes.
#   bash bench/scale.sh          (make bench-scale)
# Brings the test bed up (hack/testenv.sh up; IMAGEOPS_TESTENV_KUBELETS=0 is enough:
# no kubelet is used), applies crds/, runs python -m bench.scale (raw figures in
# bench/out/scale.json, logs in bench/out/scale-logs-*), then python -m
# bench.scale_report, which writes the "Scale" section of bench/results.md (the
# P1-P5 sections are left as they are) and bench/scale.png.
#
# Per N: Node objects and agent Leases for N nodes, 2 of them with a real agent
# (imageops run --role agent), the rest simulated by one FakeAgentFleet process
# (bench/fleet.py); the real controller (imageops run --role controller) as a
# process of its own. About 8 minutes on 2 shared cores once the bed's tools are
# built (hack/build-tools.sh, cached in ~/.cache/imageops/tools).
#
# Environment:
#   BENCH_SCALE_NODES=10,100,1000   fan-out sizes
#   BENCH_SCALE_REAL=2              nodes with a real agent (the rest simulated)
#   BENCH_SCALE_PARALLELISM=100     the Workflow's parallelism
#   BENCH_SCALE_FAILING=0.01        share of simulated nodes whose operations fail
#   BENCH_SCALE_LATENCY=lognormal:0.5,0.5
#                                   simulated latency: fixed:S, uniform:A,B or
#                                   lognormal:MEDIAN,SIGMA (seconds)
#   BENCH_SCALE_TIMEOUT=900         seconds one Workflow may take
#   BENCH_PROFILE=1                 py-spy profile of the controller at the largest N
#   BENCH_OPERATOR_SRC=dir          import the operator from dir (a patched copy)
#   BENCH_KEEP_BED=1                keep a test bed this script started
#   IMAGEOPS_TESTENV_DIR            which test bed (default .testenv)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
  echo "bench: installing matplotlib (the bench optional dependency)" >&2
  "$PYTHON" -m pip install -q matplotlib
fi
if [[ "${BENCH_PROFILE:-0}" != 0 ]] && ! command -v py-spy >/dev/null; then
  echo "bench: installing py-spy (BENCH_PROFILE=1)" >&2
  "$PYTHON" -m pip install -q py-spy
fi

# A bed that was not running before is brought down again at the end (BENCH_KEEP_BED=1
# keeps it). A bed without kubelets fails `status` but is somebody's running bed: its
# env.sh says so.
bed_was_up=
if bash hack/testenv.sh status >/dev/null 2>&1 \
  || [[ -f "${IMAGEOPS_TESTENV_DIR:-$REPO/.testenv}/env.sh" ]]; then
  bed_was_up=1
fi
if [[ -z "$bed_was_up" && "${BENCH_KEEP_BED:-}" != 1 ]]; then
  trap 'bash hack/testenv.sh down >/dev/null 2>&1 || true' EXIT
fi
# No kubelet is needed (CI refuses a bed without them: there it brings them up).
if [[ "${CI:-}" != true ]]; then
  export IMAGEOPS_TESTENV_KUBELETS=${IMAGEOPS_TESTENV_KUBELETS:-0}
fi
bash hack/testenv.sh up
# shellcheck source=/dev/null
source "${IMAGEOPS_TESTENV_DIR:-$REPO/.testenv}/env.sh"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=Established --timeout 60s -f crds/ >/dev/null

export PYTHONPATH="$REPO:$REPO/operator${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$PYTHON" -m bench.scale "$@" || status=$?
"$PYTHON" -m bench.scale_report || status=$?
exit "$status"
