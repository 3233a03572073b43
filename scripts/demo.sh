#!/usr/bin/env bash
# The README's main job: sets everything up (see bootstrap.sh), pretrains SimSiam on Fashion-MNIST (offline),
# reports its kNN accuracy beside raw pixels and exports the encoder. Extra arguments override the config's flags,
# e.g. `bash scripts/demo.sh --model_dir=runs/other`. Running it again resumes an interrupted run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec "$PYTHON" -m tf_simsiam.train --flagfile=configs/fashion_mnist.cfg "$@"
