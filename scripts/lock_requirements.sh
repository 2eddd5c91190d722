#!/usr/bin/env bash
# Regenerate requirements/<extra>.lock: the exact dependencies the images install (serve: the services;
# operator: the budget operator). Usage: scripts/lock_requirements.sh [extra ...] (default: all of them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
extras=("$@")
[ ${#extras[@]} -gt 0 ] || extras=(serve operator)
for extra in "${extras[@]}"; do
  python3 -m venv "$work/$extra"
  "$work/$extra/bin/pip" install --quiet --upgrade pip
  "$work/$extra/bin/pip" install --quiet "$ROOT[$extra]"
  {
    echo "# Pinned $extra dependencies for the images (regenerate: scripts/lock_requirements.sh $extra)."
    "$work/$extra/bin/pip" freeze --exclude lynx
  } > "$ROOT/requirements/$extra.lock"
done
