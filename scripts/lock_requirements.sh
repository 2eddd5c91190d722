#!/usr/bin/env bash
# Regenerate requirements/serve.lock: the exact serving dependencies the images install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet "$ROOT[serve]"
{
  echo "# Pinned serving dependencies for the images (regenerate: scripts/lock_requirements.sh)."
  "$work/venv/bin/pip" freeze --exclude lynx
} > "$ROOT/requirements/serve.lock"
