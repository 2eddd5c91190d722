# The versions of every tool scripts/build_tools.sh builds and scripts/images.sh packs into images:
# sourced by both, set nowhere else.
HELM_VERSION=v3.21.4  # v3.22.0 is served but not an approved release
KWOK_VERSION=v0.8.0
ETCD_VERSION=v3.5.35
KUBERNETES_VERSION=v1.36.3
# Jaeger v2, the trace store: the module version of the approved release and the Jaeger it builds.
JAEGER_VERSION=v1.75.0
JAEGER_RELEASE=2.12.0
# What kube-prometheus-stack 88.5.3 deploys, and what the real node runs.
PROMETHEUS_VERSION=v0.314.0        # the Go module version of Prometheus 3.14.0
PROMETHEUS_RELEASE=3.14.0
ALERTMANAGER_VERSION=v0.34.0
PROMETHEUS_OPERATOR_VERSION=v0.93.1
KUBE_STATE_METRICS_VERSION=v2.18.0
COREDNS_VERSION=v1.15.0
SKAFFOLD_VERSION=v2.16.1
# The OpenTelemetry Collector Builder, and the collector release every component of
# config/otelcol-builder.yaml is pinned to (tests/unit/test_collector_config.py checks they agree).
OTELCOL_VERSION=v0.165.0
