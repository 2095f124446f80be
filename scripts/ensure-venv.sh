#!/usr/bin/env bash
# Create .venv with Python 3.12+ (3.12 preferred: pandas-ta is built for it) and install the pins.
set -euo pipefail
cd "$(dirname "$0")/.."

is_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }

find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.12)
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  for p in "$root"/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -x "$p" ] && candidates+=("$p")
  done
  candidates+=(python3.13 python3)
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 && is_ok "$c"; then command -v "$c"; return 0; fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! is_ok .venv/bin/python; then
  if ! py=$(find_python); then
    echo "error: Catalyst needs Python 3.12 or newer and none was found." >&2
    echo "       Install Python 3.12 (e.g. 'pyenv install 3.12' or your OS package python3.12)," >&2
    echo "       or point PYTHON=/path/to/python3.12 at one, then run make again." >&2
    exit 1
  fi
  echo "creating .venv with $py ($("$py" --version))"
  rm -rf .venv
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
