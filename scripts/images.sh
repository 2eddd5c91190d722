#!/usr/bin/env bash
# Build the container images the real-node test bed runs, with the local Docker (no registry needed).
#   scripts/images.sh base        a Debian bookworm base with python3, made from Debian's packages
#   scripts/images.sh lynx        every image of docker/*.Dockerfile, on that base (PYTHON_IMAGE)
#   scripts/images.sh upstream    the images the umbrella chart and the node need, from the Go builds
#                                 of scripts/build_tools.sh (Prometheus with Kubernetes discovery, Alertmanager, the operator and
#                                 its config reloader, kube-state-metrics, Jaeger v2, the OpenTelemetry
#                                 Collector otelcol-lynx, pause)
#   scripts/images.sh             all three
# Prints the image references, one per line. Docker's layer cache makes a repeated build quick.
# Users build with the Dockerfiles' own default base (the pinned python image) instead: see README.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Debian's docker client: it builds with BuildKit without the buildx plugin (secrets need BuildKit).
DOCKER="${LYNX_DOCKER:-/usr/bin/docker}"
TAG="${LYNX_IMAGE_TAG:-0.1.0}"
# Local names for the upstream images: never confused with the real ones, never pulled.
REGISTRY=lynx.local
BASE_PACKAGES=python3,python3-venv,ca-certificates,passwd
BASE_IMAGE="$REGISTRY/debian-python:bookworm"
CA_BUNDLE="${LYNX_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

log() { printf '[images] %s\n' "$*" >&2; }
present() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

bash "$ROOT/scripts/dockerd.sh"

build_base() {
  if ! present "$BASE_IMAGE"; then
    bash "$ROOT/scripts/debian_install.sh" mmdebstrap
    log "$BASE_IMAGE from Debian packages ($BASE_PACKAGES)"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" bookworm - \
      | "$DOCKER" import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  fi
  echo "$BASE_IMAGE"
}

# build_lynx_image NAME: docker/NAME.Dockerfile as lynx-NAME:TAG, on the Debian base.
build_lynx_image() {
  local name="$1" started=$SECONDS
  DOCKER_BUILDKIT=1 "$DOCKER" build --quiet \
    --file "$ROOT/docker/$name.Dockerfile" --tag "lynx-$name:$TAG" \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "MODELS_IMAGE=lynx-models:$TAG" \
    --secret "id=ca-certificates,src=$CA_BUNDLE" \
    "$ROOT" >/dev/null 2>"$WORK/$name.log" \
    || { log "docker build of $name failed:"; tail -30 "$WORK/$name.log" >&2; return 1; }
  log "lynx-$name:$TAG built in $((SECONDS - started)) s"
}

build_lynx() {
  build_base >/dev/null
  WORK="$(mktemp -d)"
  local pids=() name
  # The models image (torch, the conversion) and the images that do not copy from it build side by
  # side; the three that copy models wait for it.
  for name in models gateway auditor operator; do
    build_lynx_image "$name" & pids+=($!)
  done
  wait "${pids[0]}"
  pids=("${pids[@]:1}")
  for name in tokenizer retriever decoder; do
    build_lynx_image "$name" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  rm -rf "$WORK"
  for name in models gateway tokenizer retriever decoder auditor operator; do
    echo "lynx-$name:$TAG"
  done
}

# upstream_image NAME VERSION USER DATA_DIR BINARY...: a scratch image holding the static binaries in
# /bin, run as USER, with DATA_DIR ("" for none) created and owned by USER, as in the upstream image;
# the entrypoint is the first binary.
upstream_image() {
  local name="$1" version="$2" user="$3" data="$4" ref="$REGISTRY/$1:$2" context binary
  shift 4
  context="$(mktemp -d)"
  mkdir -p "$context/bin" "$context/data"
  for binary in "$@"; do
    [ -x "$binary" ] || { log "$binary is missing: run scripts/build_tools.sh"; return 1; }
    cp "$binary" "$context/bin/"
  done
  {
    echo "FROM scratch"
    echo "COPY bin/ /bin/"
    [ -z "$data" ] || echo "COPY --chown=$user data/ $data/"
    echo "USER $user"
    echo "ENTRYPOINT [\"/bin/$(basename "$1")\"]"
  } > "$context/Dockerfile"
  DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --tag "$ref" "$context" >/dev/null
  rm -rf "$context"
  echo "$ref"
}

build_upstream() {
  local cache="${LYNX_TOOLS_CACHE:-$HOME/.cache/lynx-tools}"
  source "$ROOT/scripts/tool_versions.sh"
  upstream_image prometheus "v$PROMETHEUS_RELEASE" 65534:65534 /prometheus \
    "$cache/prometheus-kubernetes-$PROMETHEUS_VERSION/prometheus" "$cache/prometheus-$PROMETHEUS_VERSION/promtool"
  upstream_image alertmanager "$ALERTMANAGER_VERSION" 65534:65534 /alertmanager \
    "$cache/alertmanager-$ALERTMANAGER_VERSION/alertmanager" "$cache/alertmanager-$ALERTMANAGER_VERSION/amtool"
  upstream_image prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" 65534:65534 "" \
    "$cache/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/prometheus-operator"
  upstream_image prometheus-config-reloader "$PROMETHEUS_OPERATOR_VERSION" 65534:65534 "" \
    "$cache/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/prometheus-config-reloader"
  upstream_image kube-state-metrics "$KUBE_STATE_METRICS_VERSION" 65534:65534 "" \
    "$cache/kube-state-metrics-$KUBE_STATE_METRICS_VERSION/kube-state-metrics"
  # Tagged with the Jaeger release, as the upstream image jaegertracing/jaeger is; it runs as the chart's user.
  upstream_image jaeger "$JAEGER_RELEASE" 10001:10001 "" "$cache/jaeger-$JAEGER_VERSION/jaeger"
  upstream_image otelcol-lynx "$OTELCOL_VERSION" 10001:10001 "" "$cache/otelcol-lynx-$OTELCOL_VERSION/otelcol-lynx"
  upstream_image pause "$KUBERNETES_VERSION" 65535:65535 "" "$cache/pause-$KUBERNETES_VERSION/pause"
}

case "${1:-all}" in
  base) build_base ;;
  lynx) build_lynx ;;
  upstream) build_upstream ;;
  all) build_base; build_lynx; build_upstream ;;
  *) echo "usage: $0 [base|lynx|upstream]" >&2; exit 2 ;;
esac
