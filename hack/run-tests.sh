#!/usr/bin/env bash
# Brings the test bed up, runs the whole suite against it, and brings it down
# again (also on failure). Used by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
started=$(date +%s)
bash hack/testenv.sh up
trap 'bash hack/testenv.sh down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source .testenv/env.sh
# The bed is up, so a missing component is a failure, never a skip.
export IMAGEOPS_REQUIRE_TESTENV=1
rc=0
"$VENV/bin/python" -m pytest tests -q -ra --durations=15 --ignore=tests/node --ignore=tests/inproc "$@" || rc=$?
# The in-process worker tests call reconcile functions themselves: no operator of the
# suite above (they watch every namespace) may act on their objects meanwhile.
"$VENV/bin/python" -m pytest tests/inproc -q -ra --durations=5 "$@" || rc=$?
# The node tests install the operator with Helm onto the bed's kubelets, in a session
# of their own: the suite above runs operator processes that watch every namespace.
# They run even when the suite above failed; either failing fails `make test`.
"$VENV/bin/python" -m pytest tests/node -q -ra --durations=10 "$@" || rc=$?
echo "make test: $(( $(date +%s) - started ))s wall time"
exit "$rc"
