#!/usr/bin/env bash
# Prepare this checkout: the serving virtualenv (.venv), the default corpus, the models.
# Sourced by up.sh and test.sh; every step is skipped when already done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PYTHON" -m venv "$ROOT/.venv"
fi
if ! "$ROOT/.venv/bin/python" -c "import lynx, fastapi, onnxruntime, faiss, pytest" 2>/dev/null \
   || [ "$ROOT/pyproject.toml" -nt "$ROOT/.venv/.lynx-installed" ]; then
  "$ROOT/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  touch "$ROOT/.venv/.lynx-installed"
fi

# The default corpus is the Python tutorial from Debian's python3.11-doc.
if [ ! -d /usr/share/doc/python3.11/html/tutorial ]; then
  bash "$ROOT/scripts/debian_install.sh" python3.11-doc
fi

"$ROOT/.venv/bin/lynx" models build >/dev/null
"$ROOT/.venv/bin/lynx" ingest --if-missing
