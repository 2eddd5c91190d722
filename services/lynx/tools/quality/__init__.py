"""Cost per quality unit: cost (from Prometheus) divided by correct answers on a fixed question set."""
