#!/usr/bin/env bash
# The test command of the README: sets everything up (see bootstrap.sh), then runs the whole suite on the CPU.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k losses`.
set -euo pipefail
export TF_SIMSIAM_EXTRAS="${TF_SIMSIAM_EXTRAS:-cpu,test,docs,export}"  # the suite also builds the docs, tries the exports
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
# pytest exits 5 when it collected no test: that is a failure here, like any other non-zero exit.
exec "$PYTHON" -m pytest tests -q "$@"
