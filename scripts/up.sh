#!/usr/bin/env bash
# Install what is missing, then `lynx up`: six lynx processes and three observability ones, locally (see README).
# A first run builds the models, and (in the background, into ~/.cache/lynx-tools) the OpenTelemetry Collector,
# Prometheus and Jaeger: lynx serves once the collector runs, and starts the other two as each is built.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/lynx" up "$@"
