from pathlib import Path

import lynx.local.stack
from lynx.local.stack import find_binary, jaeger_config, load_config, prometheus_config
from lynx.local.topology import JaegerPorts


def executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_pinned_binaries_come_only_from_the_tool_cache_and_others_from_it_first(tmp_path, monkeypatch):
    cache, elsewhere = tmp_path / "cache", tmp_path / "path"
    monkeypatch.setattr(lynx.local.stack, "TOOLS_BIN", cache)
    monkeypatch.setenv("PATH", str(elsewhere))
    executable(elsewhere, "prometheus")
    executable(elsewhere, "kubectl")
    assert find_binary("prometheus") is None  # Debian's 2.x on PATH never stands in for the chart's 3.14
    assert find_binary("kubectl") == elsewhere / "kubectl"
    cached = executable(cache, "prometheus")
    executable(cache, "kubectl")
    assert find_binary("prometheus") == cached
    assert find_binary("kubectl") == cache / "kubectl"


def test_prometheus_targets_are_rewritten_and_unknown_jobs_dropped():
    config = prometheus_config(load_config("prometheus.yml"), {"gateway": "127.0.0.1:9", "decoder": "127.0.0.1:10"})
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {"lynx-gateway": ["127.0.0.1:9"], "lynx-decoder": ["127.0.0.1:10"]}
    assert float(config["global"]["scrape_interval"].rstrip("s")) <= 15


def test_jaeger_ports_and_paths_are_rewritten_and_the_template_kept():
    template = load_config("jaeger.yaml")
    config = jaeger_config(template, Path("/data"), JaegerPorts(1, 2, 3, 4, 5))
    query = config["extensions"]["jaeger_query"]
    assert query["http"]["endpoint"] == "127.0.0.1:1" and query["grpc"]["endpoint"] == "127.0.0.1:2"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "127.0.0.1:3"
    assert config["extensions"]["healthcheckv2"]["http"]["endpoint"] == "127.0.0.1:4"
    assert config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]["port"] == 5
    (badger,) = [b["badger"] for b in config["extensions"]["jaeger_storage"]["backends"].values()]
    assert badger["directories"] == {"keys": "/data/keys", "values": "/data/values"}
    assert template == load_config("jaeger.yaml")


def test_jaeger_keeps_traces_14_days_on_disk_listens_on_loopback_only_and_does_not_trace_itself():
    config = load_config("jaeger.yaml")
    (badger,) = [b["badger"] for b in config["extensions"]["jaeger_storage"]["backends"].values()]
    assert badger["ephemeral"] is False and badger["ttl"]["spans"] == "336h"
    assert config["extensions"]["jaeger_query"]["enable_tracing"] is False
    endpoints = [config["extensions"]["jaeger_query"]["http"]["endpoint"],
                 config["extensions"]["jaeger_query"]["grpc"]["endpoint"],
                 config["extensions"]["healthcheckv2"]["http"]["endpoint"],
                 *(p["endpoint"] for p in config["receivers"]["otlp"]["protocols"].values())]
    assert all(e.startswith("127.0.0.1:") for e in endpoints), endpoints
    assert all(r["pull"]["exporter"]["prometheus"]["host"] == "127.0.0.1"
               for r in config["service"]["telemetry"]["metrics"]["readers"])
