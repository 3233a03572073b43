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

STAMP="$VENV/.tf_simsiam-installed"  # "<hash of setup.cfg and pyproject.toml> <extras installed>"
HASH="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
{ read -r HAVE_HASH HAVE_EXTRAS < "$STAMP"; } 2>/dev/null || true
MISSING=""
for extra in ${EXTRAS//,/ }; do
  case ",${HAVE_EXTRAS:-}," in *",$extra,"*) ;; *) MISSING="$MISSING $extra" ;; esac
done
if [ ! -x "$VENV/bin/python" ] || [ "${HAVE_HASH:-}" != "$HASH" ] || [ -n "$MISSING" ]; then
  # a changed setup.cfg reinstalls what was there; a missing extra is added to it
  [ "${HAVE_HASH:-}" = "$HASH" ] && [ -n "${HAVE_EXTRAS:-}" ] && EXTRAS="$HAVE_EXTRAS,$EXTRAS"
  EXTRAS="$(echo "$EXTRAS" | tr ',' '\n' | awk 'NF && !seen[$0]++' | paste -sd, -)"
  echo "bootstrap: installing tf_simsiam[$EXTRAS] into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
  echo "$HASH $EXTRAS" > "$STAMP"
fi
PYTHON="$VENV/bin/python"
