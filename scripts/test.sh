#!/usr/bin/env bash
# Install what is missing and run the whole test suite (unit, integration, the chart on kwok and on a real node).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"

# The real node's host side (tests/cluster/realnode.py): Docker for the images, a second containerd
# with runc, the CNI plugins, the tools kubelet and kube-proxy call; mmdebstrap for the Debian base
# image; gcc and the static libc for Kubernetes' pause program. Debian's chromium for the console's browser tests
# (tests/integration/test_console.py drives it with Playwright; Playwright never downloads a browser of its own).
bash "$ROOT/scripts/debian_install.sh" docker.io containerd runc containernetworking-plugins conntrack socat \
  ethtool iptables mmdebstrap gcc libc6-dev chromium
bash "$ROOT/scripts/dockerd.sh"

# The lynx images (downloads and the model conversion) build while go builds the tools (CPU): Prometheus,
# Alertmanager, the Prometheus operator, kube-state-metrics, Jaeger, CoreDNS, skaffold and the
# Kubernetes binaries, once per version into ~/.cache/lynx-tools. The tests' fixtures build again
# what changed since (Docker's cache makes the rest instant).
started=$SECONDS
IMAGES_LOG="$(mktemp)"
bash "$ROOT/scripts/images.sh" lynx >"$IMAGES_LOG" 2>&1 &
images=$!
TOOLS_BIN="$(bash "$ROOT/scripts/build_tools.sh")"
export PATH="$TOOLS_BIN:$PATH"
if ! wait "$images"; then
  echo "[test] scripts/images.sh lynx failed:" >&2
  tail -40 "$IMAGES_LOG" >&2
  exit 1
fi
cat "$IMAGES_LOG" >&2
rm -f "$IMAGES_LOG"
echo "[test] tools and images ready in $((SECONDS - started)) s" >&2

cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
