#!/usr/bin/env bash
# Install what is missing and start all four services locally (see README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"

# The observability stack's Prometheus and Jaeger (the trace store), the versions the chart deploys, and the
# OpenTelemetry Collector in front of Jaeger (it queues spans on disk while Jaeger is down): built with `go` into
# ~/.cache/lynx-tools the first time (build_tools.sh names each build as it starts it), found there afterwards.
if [[ " $* " != *" --no-observability "* ]]; then
  echo "up.sh: Prometheus 3.14, Jaeger 2.12 and the OpenTelemetry Collector from ~/.cache/lynx-tools (scripts/build_tools.sh; the first build takes minutes)" >&2
  if ! bash "$ROOT/scripts/build_tools.sh" prometheus jaeger otelcol >/dev/null; then
    echo "up.sh: building Prometheus, Jaeger or the collector failed (above); scripts/up.sh --no-observability starts lynx without them" >&2
    exit 1
  fi
fi
exec "$ROOT/.venv/bin/lynx" up "$@"
