#!/usr/bin/env bash
# The test command of the README: sets everything up (see bootstrap.sh), then runs the whole suite on the CPU.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k losses`.
set -euo pipefail
export TF_SIMSIAM_EXTRAS="${TF_SIMSIAM_EXTRAS:-cpu,test,docs,export}"  # the suite also builds the docs, tries the exports
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
# Two test processes (pytest-xdist): a test spends much of its time in Python (imports, tracing, subprocesses)
# with a core idle, so two of them at once finish the suite sooner on a 2-core machine. TF_SIMSIAM_TEST_WORKERS=0
# runs it in one process. pytest exits 5 when it collected no test: a failure here, like any other non-zero exit.
exec "$PYTHON" -m pytest tests -q -n "${TF_SIMSIAM_TEST_WORKERS:-2}" --dist worksteal --durations=30 "$@"
