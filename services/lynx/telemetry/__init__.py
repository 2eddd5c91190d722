"""Telemetry shared by every lynx service: tracing, metrics, JSON logs and the cost model, and the one client that
reads metrics back from Prometheus (``prometheus_api``)."""
