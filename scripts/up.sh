#!/usr/bin/env bash
# Install what is missing, then `lynx up`: six lynx processes and three observability ones, locally (see README).
# A first run builds the models and, with `go` into ~/.cache/lynx-tools, the OpenTelemetry Collector, Prometheus and
# Jaeger: the collector (the one piece lynx serves behind: it holds the spans until Jaeger is up) while the models
# build, the other two in the background once lynx serves (`lynx up` starts each as it is built).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
collector_build=""
if [[ " $* " != *" --no-observability "* ]]; then
  mkdir -p "$HOME/.cache/lynx"
  bash "$ROOT/scripts/build_tools.sh" otelcol >/dev/null 2>"$HOME/.cache/lynx/otelcol-build.log" &
  collector_build=$!
fi
source "$ROOT/scripts/bootstrap.sh"
if [ -n "$collector_build" ] && ! wait "$collector_build"; then
  echo "up.sh: building the collector failed (~/.cache/lynx/otelcol-build.log); lynx up tries again" >&2
fi
exec "$ROOT/.venv/bin/lynx" up "$@"
