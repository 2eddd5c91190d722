#!/bin/sh
# skaffold's post-build hook in the `testbed` profile: load the image just built into the real node's
# containerd (LYNX_NODE_CONTAINERD, its socket), under the name skaffold deploys. A local build that is
# not pushed is deployed as <name>:<image id>, a tag skaffold adds after the hooks, so it is added here.
set -eu
id="$(docker image inspect --format '{{.Id}}' "$SKAFFOLD_IMAGE")"
ref="${SKAFFOLD_IMAGE%:*}:${id#sha256:}"
docker tag "$SKAFFOLD_IMAGE" "$ref"
docker save "$ref" | ctr --address "$LYNX_NODE_CONTAINERD" --namespace k8s.io images import -
