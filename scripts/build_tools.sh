#!/usr/bin/env bash
# Build the Kubernetes test bed's tools and the local stack's Prometheus, Jaeger and OpenTelemetry
# Collector with `go` from the module proxy, into a cache outside the repo keyed by tool and version;
# a tool whose binary is already there is skipped.
#   scripts/build_tools.sh            build all, print the bin folder
#   scripts/build_tools.sh helm etcd  build some
# Cache: ${LYNX_TOOLS_CACHE:-~/.cache/lynx-tools}/<tool>-<version>/
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$SCRIPTS/tool_versions.sh"

CACHE="${LYNX_TOOLS_CACHE:-$HOME/.cache/lynx-tools}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
mkdir -p "$CACHE"

log() { printf '[build_tools] %s\n' "$*" >&2; }

# have BINARY EXPECTED ARGS...: the binary runs and its version output names EXPECTED.
have() { [ -x "$1" ] && "$1" "${@:3}" 2>&1 | grep -qF -- "$2"; }

build_helm() {
  local dir="$CACHE/helm-$HELM_VERSION"
  have "$dir/helm" "$HELM_VERSION" version --short && return
  log "helm $HELM_VERSION"
  GOBIN="$dir" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_kwok() {
  local dir="$CACHE/kwok-$KWOK_VERSION"
  have "$dir/kwok" "$KWOK_VERSION" --version && have "$dir/kwokctl" "$KWOK_VERSION" --version && return
  log "kwok $KWOK_VERSION"
  GOBIN="$dir" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

# The folder the module cache holds MODULE@VERSION in, downloaded if need be.
module_dir() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

# A throwaway module that requires the tool, so the tool's own replace directives can be copied in.
# It starts from the tool's own go.sum: dependencies are checked against the hashes the tool's
# authors recorded, including pseudo-versions the public checksum database does not list.
wrapper_module() {
  local work="$1" module="$2" version="$3" source
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init local/wrapper >/dev/null 2>&1
  go mod edit -require="$module@$version"
  source="$(module_dir "$module@$version")"
  if [ -f "$source/go.sum" ]; then
    cp "$source/go.sum" go.sum && chmod u+w go.sum
  fi
}

# Build PACKAGE of MODULE@VERSION (with the module's own replaces) into OUTPUT.
build_wrapped() {
  local module="$1" version="$2" package="$3" output="$4" ldflags="$5" work
  work="$(mktemp -d)"
  (
    wrapper_module "$work" "$module" "$version"
    copy_replaces "$module" "$version"
    go get "$package@$version"
    mkdir -p "$(dirname "$output")"
    go build -trimpath -ldflags "$ldflags" -o "$output" "$package"
  )
  rm -rf "$work"
}

build_etcd() {
  local dir="$CACHE/etcd-$ETCD_VERSION"
  have "$dir/etcd" "Version: ${ETCD_VERSION#v}" --version && return
  log "etcd $ETCD_VERSION"
  build_wrapped go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$dir/etcd" "-s -w"
}

# The go.mod of $1@$2, as `go mod edit -json` prints it, in a temporary file; prints the file's path.
gomod_json() {
  local gomod out
  gomod="$(go mod download -json "$1@$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  out="$(mktemp)"
  go mod edit -json "$gomod" > "$out"
  echo "$out"
}

# Copy the module-to-module replaces of $1@$2 (those that name versions, not local paths).
copy_replaces() {
  local json
  json="$(gomod_json "$1" "$2")"
  python3 "$SCRIPTS/go_replaces.py" versions "$json" | xargs -r go mod edit
  rm -f "$json"
}

# Jaeger v2 (an OpenTelemetry Collector distribution; Apache-2.0), the trace store: built inside a copy
# of its module, whose go.mod has a replace that `go install` refuses. Its UI is npm-built and absent
# from the module, so the binary serves Jaeger's own placeholder page; the query APIs are whole.
build_jaeger() {
  local dir="$CACHE/jaeger-$JAEGER_VERSION" info=github.com/jaegertracing/jaeger/internal/version
  have "$dir/jaeger" "$JAEGER_RELEASE" version && return
  log "jaeger $JAEGER_RELEASE ($JAEGER_VERSION)"
  build_in_module github.com/jaegertracing/jaeger "$JAEGER_VERSION" "$dir" \
    "-s -w -X $info.latestVersion=v$JAEGER_RELEASE -X $info.commitSHA=$JAEGER_VERSION" "" ./cmd/jaeger
}

# The OpenTelemetry Collector between lynx's services and Jaeger: the Collector Builder at OTELCOL_VERSION
# generates a main module from config/otelcol-builder.yaml (only the components lynx configures) and
# compiles it. The manifest is kept beside the binary: a changed manifest is a rebuild.
build_otelcol() {
  local dir="$CACHE/otelcol-lynx-$OTELCOL_VERSION" manifest="$SCRIPTS/../config/otelcol-builder.yaml" work
  have "$dir/otelcol-lynx" "${OTELCOL_VERSION#v}" --version && cmp -s "$manifest" "$dir/otelcol-builder.yaml" && return
  log "otelcol-lynx $OTELCOL_VERSION"
  work="$(mktemp -d)"
  (
    cd "$work"
    GOBIN="$work/bin" go install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"
    # The manifest's output_path is relative: the generated module and the binary land in $work.
    "$work/bin/builder" --config="$manifest" --skip-strict-versioning=false
    mkdir -p "$dir"
    # mv, not cp: a collector still running from the old binary keeps its file ("text file busy" otherwise).
    mv otelcol-lynx/otelcol-lynx "$dir/otelcol-lynx"
    cp "$manifest" "$dir/"
  )
  rm -rf "$work"
}

# Kubernetes components, built in one wrapper module; those already in the cache are skipped.
CONTROL_PLANE=(kube-apiserver kube-controller-manager kube-scheduler)
NODE=(kubelet kube-proxy)

build_kubernetes_components() {
  local dir="$CACHE/kubernetes-$KUBERNETES_VERSION" missing=() component
  for component in "$@"; do
    have "$dir/$component" "$KUBERNETES_VERSION" --version || missing+=("$component")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "${missing[*]} $KUBERNETES_VERSION"
  local work staging minor
  work="$(mktemp -d)"
  minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  staging="v0.${KUBERNETES_VERSION#v1.}"
  (
    wrapper_module "$work" k8s.io/kubernetes "$KUBERNETES_VERSION"
    # Every ./staging/src/k8s.io/X replace of the tag becomes k8s.io/X => k8s.io/X v0.<minor>.<patch>.
    local json
    json="$(gomod_json k8s.io/kubernetes "$KUBERNETES_VERSION")"
    python3 "$SCRIPTS/go_replaces.py" staging "$json" "$staging" | xargs -r go mod edit
    rm -f "$json"
    for component in "${missing[@]}"; do
      go get "k8s.io/kubernetes/cmd/$component@$KUBERNETES_VERSION"
    done
    local ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    mkdir -p "$dir"
    for component in "${missing[@]}"; do
      go build -trimpath -ldflags "$ldflags" -o "$dir/$component" "k8s.io/kubernetes/cmd/$component"
    done
  )
  rm -rf "$work"
}

build_kubernetes() { build_kubernetes_components "${CONTROL_PLANE[@]}"; }
build_node() { build_kubernetes_components "${NODE[@]}"; }

# The pause container's program: Kubernetes' own pause.c, linked statically.
build_pause() {
  local dir="$CACHE/pause-$KUBERNETES_VERSION" source
  have "$dir/pause" "pause.c" -v && return
  log "pause $KUBERNETES_VERSION"
  source="$(module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")"
  mkdir -p "$dir"
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$dir/pause" "$source/build/pause/linux/pause.c"
}

# Build PACKAGES of MODULE@VERSION inside a copy of the module itself, so its own go.sum, replaces
# and excludes apply as its authors wrote them (and not its go.work); the binaries go to OUTPUT_DIR.
# PREPARE is a command run in the copy first ("" for none); GO_BUILD_TAGS, when set, are the build tags.
build_in_module() {
  local module="$1" version="$2" output="$3" ldflags="$4" prepare="$5" work source package
  shift 5
  work="$(mktemp -d)"
  source="$(module_dir "$module@$version")"
  cp -r "$source/." "$work" && chmod -R u+w "$work"
  mkdir -p "$output"
  (
    cd "$work"
    [ -z "$prepare" ] || "$prepare"
    for package in "$@"; do
      go build -trimpath ${GO_BUILD_TAGS:+-tags "$GO_BUILD_TAGS"} -ldflags "$ldflags" -o "$output/" "$package"
    done
  )
  rm -rf "$work"
}

# -X flags that make a Prometheus-family binary report VERSION in --version.
prometheus_version_flags() {
  local v="github.com/prometheus/common/version"
  echo "-s -w -X $v.Version=$1 -X $v.Revision=$2 -X $v.Branch=module -X $v.BuildUser=lynx -X $v.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
}

# Prometheus twice, from one module copy's sources: the local stack's with every service discovery
# but static, file and http left out (the build tag remove_all_sd: about 100 s cold instead of 260 s,
# so a first `lynx up` waits less), and the cluster image's with Kubernetes discovery put back
# (enable_kubernetes_sd), which the operator's scrape configurations use. `go version -m` names the tags.
build_prometheus_variant() {
  local dir="$1" tags="$2" release="$PROMETHEUS_RELEASE"
  shift 2
  have "$dir/prometheus" "version $release" --version \
    && go version -m "$dir/prometheus" | grep -qE -- "-tags=$tags\$" && return
  log "prometheus $release ($PROMETHEUS_VERSION, tags $tags)"
  GO_BUILD_TAGS="$tags" build_in_module github.com/prometheus/prometheus "$PROMETHEUS_VERSION" "$dir" \
    "$(prometheus_version_flags "$release" "$PROMETHEUS_VERSION")" "" "$@"
}

build_prometheus() {
  build_prometheus_variant "$CACHE/prometheus-$PROMETHEUS_VERSION" remove_all_sd ./cmd/prometheus ./cmd/promtool
}

build_prometheus_kubernetes() {
  build_prometheus_variant "$CACHE/prometheus-kubernetes-$PROMETHEUS_VERSION" remove_all_sd,enable_kubernetes_sd \
    ./cmd/prometheus
}

# Alertmanager embeds its web UI from ui/app/dist, which npm builds and the module zip lacks: the
# binary gets a page saying so instead. The API (/api/v2) and amtool are unaffected.
alertmanager_without_ui() {
  mkdir -p ui/app/dist
  printf '<!doctype html><title>Alertmanager</title><p>This build has no web UI (built from the Go module, without npm); the API is at <a href="api/v2/status">api/v2</a>.\n' \
    > ui/app/dist/index.html
}

build_alertmanager() {
  local dir="$CACHE/alertmanager-$ALERTMANAGER_VERSION"
  have "$dir/alertmanager" "version ${ALERTMANAGER_VERSION#v}" --version && return
  log "alertmanager $ALERTMANAGER_VERSION"
  build_in_module github.com/prometheus/alertmanager "$ALERTMANAGER_VERSION" "$dir" \
    "$(prometheus_version_flags "${ALERTMANAGER_VERSION#v}" "$ALERTMANAGER_VERSION")" alertmanager_without_ui ./cmd/alertmanager ./cmd/amtool
}

build_kube_state_metrics() {
  local dir="$CACHE/kube-state-metrics-$KUBE_STATE_METRICS_VERSION"
  have "$dir/kube-state-metrics" "${KUBE_STATE_METRICS_VERSION#v}" version && return
  log "kube-state-metrics $KUBE_STATE_METRICS_VERSION"
  build_in_module k8s.io/kube-state-metrics/v2 "$KUBE_STATE_METRICS_VERSION" "$dir" \
    "$(prometheus_version_flags "$KUBE_STATE_METRICS_VERSION" "$KUBE_STATE_METRICS_VERSION")" "" .
}

build_coredns() {
  local dir="$CACHE/coredns-$COREDNS_VERSION"
  have "$dir/coredns" "CoreDNS-${COREDNS_VERSION#v}" -version && return
  log "coredns $COREDNS_VERSION"
  build_in_module github.com/coredns/coredns "$COREDNS_VERSION" "$dir" \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" "" .
}

# The operator's go.mod replaces its own API and client submodules with local folders that its
# module zip does not contain: build through a wrapper that requires them at the same version.
build_prometheus_operator() {
  local dir="$CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" module=github.com/prometheus-operator/prometheus-operator
  have "$dir/prometheus-operator" "${PROMETHEUS_OPERATOR_VERSION#v}" --version \
    && have "$dir/prometheus-config-reloader" "${PROMETHEUS_OPERATOR_VERSION#v}" --version && return
  log "prometheus-operator and prometheus-config-reloader $PROMETHEUS_OPERATOR_VERSION"
  local work ldflags
  work="$(mktemp -d)"
  ldflags="$(prometheus_version_flags "${PROMETHEUS_OPERATOR_VERSION#v}" "$PROMETHEUS_OPERATOR_VERSION")"
  (
    wrapper_module "$work" "$module" "$PROMETHEUS_OPERATOR_VERSION"
    copy_replaces "$module" "$PROMETHEUS_OPERATOR_VERSION"
    go mod edit -require="$module/pkg/apis/monitoring@$PROMETHEUS_OPERATOR_VERSION" \
      -require="$module/pkg/client@$PROMETHEUS_OPERATOR_VERSION"
    go get "$module/cmd/operator@$PROMETHEUS_OPERATOR_VERSION" "$module/cmd/prometheus-config-reloader@$PROMETHEUS_OPERATOR_VERSION"
    mkdir -p "$dir"
    go build -trimpath -ldflags "$ldflags" -o "$dir/prometheus-operator" "$module/cmd/operator"
    go build -trimpath -ldflags "$ldflags" -o "$dir/prometheus-config-reloader" "$module/cmd/prometheus-config-reloader"
  )
  rm -rf "$work"
}

build_skaffold() {
  local dir="$CACHE/skaffold-$SKAFFOLD_VERSION"
  have "$dir/skaffold" "$SKAFFOLD_VERSION" version && return
  log "skaffold $SKAFFOLD_VERSION"
  build_in_module github.com/GoogleContainerTools/skaffold/v2 "$SKAFFOLD_VERSION" "$dir" \
    "-s -w -X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$SKAFFOLD_VERSION" "" ./cmd/skaffold
}

# Two lanes at once: each build alternates downloads (network) and compiling (both cores), so a
# second lane fills the gaps. A lane stops at its first failure; the script fails if either did.
build_lane() {
  local tool started
  for tool in "$@"; do
    started=$SECONDS
    "build_$tool"
    [ $((SECONDS - started)) -lt 2 ] || log "$tool built in $((SECONDS - started)) s"
  done
}

tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then
  build_lane jaeger otelcol kubernetes node helm kwok etcd pause &
  lane=$!
  build_lane prometheus alertmanager prometheus_kubernetes prometheus_operator kube_state_metrics coredns skaffold
  wait "$lane"
else
  build_lane "${tools[@]}"
fi

# One folder of links to the current versions' binaries (those built so far): the PATH the tests use.
bin="$CACHE/bin"
mkdir -p "$bin"
for dir in "helm-$HELM_VERSION" "kwok-$KWOK_VERSION" "etcd-$ETCD_VERSION" "jaeger-$JAEGER_VERSION" \
  "kubernetes-$KUBERNETES_VERSION" "pause-$KUBERNETES_VERSION" "prometheus-$PROMETHEUS_VERSION" \
  "alertmanager-$ALERTMANAGER_VERSION" "prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" \
  "kube-state-metrics-$KUBE_STATE_METRICS_VERSION" "coredns-$COREDNS_VERSION" "skaffold-$SKAFFOLD_VERSION" \
  "otelcol-lynx-$OTELCOL_VERSION"; do
  for binary in "$CACHE/$dir"/*; do
    [ -x "$binary" ] && ln -sf "$binary" "$bin/$(basename "$binary")"
  done
done
echo "$bin"
