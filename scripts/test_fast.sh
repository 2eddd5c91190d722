#!/usr/bin/env bash
# The fast lane: the unit tests, the packaging checks, lint and the README's paths, with no Docker and no Go
# build (about a minute once the virtualenv and the models exist; the first run makes them, as scripts/up.sh does).
# Arguments go to pytest. The whole suite is scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest tests/unit tests/packaging tests/test_lint.py tests/test_readme.py "$@"
