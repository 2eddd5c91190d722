"""Grafana dashboards, built from Python so every panel shares the same helpers (see build.py)."""
