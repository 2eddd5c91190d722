#!/usr/bin/env bash
# Build the Kubernetes test bed's tools with `go` from the module proxy, into a cache outside the
# repo keyed by tool and version; a tool whose binary is already there is skipped.
#   scripts/build_tools.sh            build all, print the bin folder
#   scripts/build_tools.sh helm etcd  build some
# Cache: ${LYNX_TOOLS_CACHE:-~/.cache/lynx-tools}/<tool>-<version>/
set -euo pipefail

HELM_VERSION=v3.22.0
KWOK_VERSION=v0.8.0
ETCD_VERSION=v3.5.35
KUBERNETES_VERSION=v1.36.3
# Tempo's v2 tags cannot be module versions (no /v2 in its module path): pin a main-branch commit
# the module proxy serves (2025-05-29, between Tempo 2.7 and 2.8). The checksum database does not
# list this pseudo-version, hence GONOSUMDB for this one module.
TEMPO_VERSION=v1.5.1-0.20250529124718-87c2dc380cec

CACHE="${LYNX_TOOLS_CACHE:-$HOME/.cache/lynx-tools}"
SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
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

# A throwaway module that requires the tool, so the tool's own replace directives can be copied in.
# It starts from the tool's own go.sum: dependencies are checked against the hashes the tool's
# authors recorded, including pseudo-versions the public checksum database does not list.
wrapper_module() {
  local work="$1" module="$2" version="$3" source
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init local/wrapper >/dev/null 2>&1
  go mod edit -require="$module@$version"
  source="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
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

build_tempo() {
  local dir="$CACHE/tempo-${TEMPO_VERSION##*-}"
  have "$dir/tempo" "version" --version && return
  log "tempo $TEMPO_VERSION"
  GONOSUMDB=github.com/grafana/tempo build_wrapped github.com/grafana/tempo "$TEMPO_VERSION" \
    github.com/grafana/tempo/cmd/tempo "$dir/tempo" "-s -w -X main.Version=${TEMPO_VERSION}"
}

build_kubernetes() {
  local dir="$CACHE/kubernetes-$KUBERNETES_VERSION"
  if have "$dir/kube-apiserver" "$KUBERNETES_VERSION" --version \
     && have "$dir/kube-controller-manager" "$KUBERNETES_VERSION" --version \
     && have "$dir/kube-scheduler" "$KUBERNETES_VERSION" --version; then
    return
  fi
  log "kube-apiserver, kube-controller-manager, kube-scheduler $KUBERNETES_VERSION"
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
    for component in kube-apiserver kube-controller-manager kube-scheduler; do
      go get "k8s.io/kubernetes/cmd/$component@$KUBERNETES_VERSION"
    done
    local ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    mkdir -p "$dir"
    for component in kube-apiserver kube-controller-manager kube-scheduler; do
      go build -trimpath -ldflags "$ldflags" -o "$dir/$component" "k8s.io/kubernetes/cmd/$component"
    done
  )
  rm -rf "$work"
}

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(helm kwok etcd kubernetes tempo)
for tool in "${tools[@]}"; do
  "build_$tool"
done

# One folder of links, the PATH the tests use.
bin="$CACHE/bin"
mkdir -p "$bin"
ln -sf "$CACHE/helm-$HELM_VERSION/helm" "$bin/helm"
ln -sf "$CACHE/kwok-$KWOK_VERSION/kwok" "$bin/kwok"
ln -sf "$CACHE/kwok-$KWOK_VERSION/kwokctl" "$bin/kwokctl"
ln -sf "$CACHE/etcd-$ETCD_VERSION/etcd" "$bin/etcd"
ln -sf "$CACHE/tempo-${TEMPO_VERSION##*-}/tempo" "$bin/tempo"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
  ln -sf "$CACHE/kubernetes-$KUBERNETES_VERSION/$component" "$bin/$component"
done
echo "$bin"
