"""Telemetry shared by every lynx service: tracing, metrics, JSON logs and the cost model."""
