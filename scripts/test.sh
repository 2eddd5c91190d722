#!/usr/bin/env bash
# Install what is missing and run the whole test suite (unit + integration).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"

# What only the tests need: Prometheus, promtool, Alertmanager and amtool (Debian), and the Go-built
# tools (Tempo and the Kubernetes test bed), built once per version into ~/.cache/lynx-tools.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null
fi
TOOLS_BIN="$(bash "$ROOT/scripts/build_tools.sh")"
export PATH="$TOOLS_BIN:$PATH"

cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
