#!/usr/bin/env bash
# Benchmarks of imageops against the docker CLI on the real test bed.
#   bash bench/run.sh            (make bench)
# Brings the test bed up (hack/testenv.sh up), applies crds/, then runs
# python -m bench.main, which writes bench/results.md and bench/*.png
# (raw results, operator logs and profiles go to bench/out/, gitignored).
# The scale benchmark (a fan-out to 10/100/1000 simulated nodes) is separate:
# bash bench/scale.sh (make bench-scale); it writes the Scale section of results.md.
#
# Environment (the defaults take about 5 minutes on a 2-core machine):
#   BENCH_REPEAT=5         repetitions of P1 (per size and action) and workflows
#   BENCH_FAST_REPEAT=20   repetitions of the cheap P2 measurements
#   BENCH_P3_OPS=50        identical pulls at once (P3)
#   BENCH_P4_OPS=500       Tag operations at once (P4)
#   BENCH_P5_AGENTS=20     agent processes (P5)
#   BENCH_P5_OPS=200       operations spread over them (P5)
#   BENCH_ONLY=p1,p4       run only these sections (p1 p2 p3 p4 p5 workflows node);
#                          a partial run writes to bench/out/ unless BENCH_OUT is set
#   BENCH_SIZES=5MB-1layer P1 image sizes (5MB-1layer,50MB-10layers,200MB-1layer)
#   BENCH_PROFILE=1        py-spy profiles (pip install py-spy): 200 extra cache hits
#                          (P2) and two extra P4 runs, none of them counted in the figures
#   BENCH_NOTE="..."       a remark printed in results.md (e.g. the machine was shared)
#   BENCH_ALL_NAMESPACES=1 run the operator with -A instead of -n <bench namespace>
#   BENCH_OPERATOR_SRC=dir import the operator from dir instead of operator/
#                          (to measure a patched copy)
#   BENCH_KEEP_BED=1       keep a test bed this script started
#   BENCH_KEEP_OBJECTS=1   keep the benchmark namespace and its objects (debugging)
#   IMAGEOPS_TESTENV_DIR   which test bed (default .testenv)
#   PYTHON=...             interpreter (default: .venv/bin/python, else python3)
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

# A bed that was not running before is brought down again at the end
# (BENCH_KEEP_BED=1 keeps it). IMAGEOPS_TESTENV_DIR selects another bed, e.g.
# one of its own while tests run against the default one: other controllers
# on the same API server would act on the benchmark's operations.
bed_was_up=
if bash hack/testenv.sh status >/dev/null 2>&1; then bed_was_up=1; fi
if [[ -z "$bed_was_up" && "${BENCH_KEEP_BED:-}" != 1 ]]; then
  trap 'bash hack/testenv.sh down >/dev/null 2>&1 || true' EXIT
fi
if [[ "${BENCH_PROFILE:-0}" != 0 ]] && ! command -v py-spy >/dev/null; then
  echo "bench: installing py-spy (BENCH_PROFILE=1)" >&2
  "$PYTHON" -m pip install -q py-spy
fi

bash hack/testenv.sh up
# shellcheck source=/dev/null
source "${IMAGEOPS_TESTENV_DIR:-$REPO/.testenv}/env.sh"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=Established --timeout 60s -f crds/ >/dev/null

export PYTHONPATH="$REPO:$REPO/operator${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m bench.main "$@"
