# Sourced by scripts/demo.sh and scripts/test.sh: installs what tf_simsiam needs on a fresh machine.
#  - the Debian package dataset-fashion-mnist (the embedded, offline default data set), when apt-get exists;
#  - a virtual environment .venv with tf_simsiam installed editable, with tensorflow-cpu and the test extras.
# Re-running is cheap: nothing is reinstalled unless setup.cfg changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TF_SIMSIAM_VENV:-$ROOT/.venv}"
EXTRAS="${TF_SIMSIAM_EXTRAS:-cpu,test}"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  echo "bootstrap: installing dataset-fashion-mnist (Debian package)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq || echo "bootstrap: apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

STAMP="$VENV/.tf_simsiam-installed"
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "bootstrap: installing tf_simsiam[$EXTRAS] into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
PYTHON="$VENV/bin/python"
