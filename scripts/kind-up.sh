#!/usr/bin/env bash
# Bring lynx up on a local kind cluster: create the cluster, build the images, `kind load` them,
# fetch the chart's dependencies, install, print how to reach the gateway and Grafana.
# Needs docker, kind, helm and kubectl. Usage: scripts/kind-up.sh [extra helm args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${LYNX_KIND_CLUSTER:-lynx}"
NAMESPACE="${LYNX_NAMESPACE:-lynx}"
RELEASE="${LYNX_RELEASE:-lynx}"
TAG="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/lynx/Chart.yaml")"
SERVICES=(gateway tokenizer retriever decoder auditor operator)

for tool in docker kind helm kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not installed" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER"
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "building images (tag $TAG); the models image converts the models once and takes a few minutes"
docker build -f "$ROOT/docker/models.Dockerfile" -t "lynx-models:$TAG" "$ROOT"
for service in "${SERVICES[@]}"; do
  docker build -f "$ROOT/docker/$service.Dockerfile" --build-arg "MODELS_IMAGE=lynx-models:$TAG" \
    -t "lynx-$service:$TAG" "$ROOT"
  kind load docker-image "lynx-$service:$TAG" --name "$CLUSTER"
done

helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm repo add grafana-community https://grafana-community.github.io/helm-charts >/dev/null
helm dependency build "$ROOT/charts/lynx"

KEY="lynx-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
KEY_HASH="$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)"
helm upgrade --install "$RELEASE" "$ROOT/charts/lynx" --namespace "$NAMESPACE" --create-namespace \
  --set "image.tag=$TAG" --set "tenants.keys.demo=$KEY_HASH" --set operator.enabled=true --wait --timeout 20m "$@"

cat <<MSG

lynx is running in kind cluster "$CLUSTER", namespace "$NAMESPACE".
  gateway: kubectl -n $NAMESPACE port-forward svc/$RELEASE-gateway 8080:8080
  grafana: kubectl -n $NAMESPACE port-forward svc/$RELEASE-grafana 3000:80
  tenant "demo" API key (shown once): $KEY
  check:   helm test $RELEASE -n $NAMESPACE
MSG
