# Sourced by ./run: make sure .venv exists and has the project installed (editable, with
# the dev extras: the temporal CLI, pytest, playwright ...), as ./test does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: $PYTHON not found: install Python 3.11 or newer (or set PYTHON=/path/to/python)" >&2
        exit 1
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: $("$PYTHON" -V 2>&1) is too old: Python 3.11 or newer is needed (set PYTHON=...)" >&2
        exit 1
    fi
    echo "creating .venv with $("$PYTHON" -V 2>&1) ..." >&2
    if ! "$PYTHON" -m venv .venv; then
        echo "error: could not create .venv; on Debian/Ubuntu: apt-get install python3-venv" >&2
        rm -rf .venv
        exit 1
    fi
fi
if ! .venv/bin/python -c "import temporalio, sqlmodel, pytest, playwright" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
    echo "installing the project into .venv (pip install -e '.[dev]') ..." >&2
    .venv/bin/pip install --quiet -e '.[dev]'
    touch .venv/.installed
fi
