import re
from pathlib import Path

import yaml

from lynx.local.stack import REPO, TRACE_STORE_EXPORTER, collector_config, load_config
from lynx.local.topology import CollectorPorts

EXPORTER = TRACE_STORE_EXPORTER
# Spans a second the local stack makes at its peak: ~14 spans a request, ~1 request a second on two cores
# (tests/integration/test_collector.py prints both); the chart's decoder replicas scale this.
PEAK_SPANS_PER_SECOND = 20


def seconds(duration: str) -> float:
    """A Go duration such as 2s, 5m or 1h30m, in seconds."""
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in re.findall(r"([\d.]+)([hms])", duration))


def shell_variable(path: Path, name: str) -> str:
    (value,) = re.findall(rf"^{name}=(\S+)", path.read_text(), re.M)
    return value


def test_ports_paths_and_the_trace_store_are_rewritten_and_the_template_kept():
    template = load_config("otelcol.yaml")
    config = collector_config(template, Path("/data"), CollectorPorts(otlp_http=1, health=2, metrics=3),
                              "http://127.0.0.1:9")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "127.0.0.1:1"
    assert config["extensions"]["health_check"]["endpoint"] == "127.0.0.1:2"
    assert config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]["port"] == 3
    queue = config["extensions"]["file_storage/queue"]
    assert queue["directory"] == queue["compaction"]["directory"] == "/data/queue"
    assert config["exporters"][EXPORTER]["endpoint"] == "http://127.0.0.1:9"
    assert template == load_config("otelcol.yaml")


def test_the_queue_is_on_disk_bounded_in_batches_and_outlasts_the_retries():
    config = load_config("otelcol.yaml")
    queue, retry = config["exporters"][EXPORTER]["sending_queue"], config["exporters"][EXPORTER]["retry_on_failure"]
    assert queue["storage"] in config["service"]["extensions"] and queue["storage"].startswith("file_storage")
    assert queue["sizer"] == "requests" and queue["queue_size"] > 0
    assert config["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "batch"]
    batch = config["processors"]["batch"]
    # At most one batch per timeout below send_batch_size spans per timeout: the time the queue takes to fill.
    seconds_per_batch = min(seconds(batch["timeout"]), batch["send_batch_size"] / PEAK_SPANS_PER_SECOND)
    survives = min(queue["queue_size"] * seconds_per_batch, seconds(retry["max_elapsed_time"]))
    assert survives >= 30 * 60
    assert seconds(retry["max_interval"]) <= 10  # a batch waiting to be retried goes soon after the store is back


def test_every_component_is_built_at_the_pinned_collector_release():
    version = shell_variable(REPO / "scripts" / "tool_versions.sh", "OTELCOL_VERSION")
    manifest = yaml.safe_load((REPO / "config" / "otelcol-builder.yaml").read_text())
    components = [c["gomod"] for kind in ("receivers", "processors", "exporters", "extensions") for c in manifest[kind]]
    assert components and all(c.endswith(f" {version}") for c in components), components
    # build_tools.sh finds a build current by the version the binary prints.
    assert manifest["dist"]["version"].startswith(version.removeprefix("v"))


def test_the_chart_runs_the_collector_release_that_is_built():
    version = shell_variable(REPO / "scripts" / "tool_versions.sh", "OTELCOL_VERSION")
    chart = yaml.safe_load((REPO / "charts" / "lynx" / "values.yaml").read_text())["collector"]["image"]
    node = yaml.safe_load((REPO / "tests" / "cluster" / "node-values.yaml").read_text())["collector"]["image"]
    assert chart["tag"] == version.removeprefix("v")
    assert node == {"repository": "lynx.local/otelcol-lynx", "tag": version, "pullPolicy": "Never"}
