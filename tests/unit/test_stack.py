from pathlib import Path

import lynx.stack
from lynx.stack import TempoPorts, find_binary, load_config, prometheus_config, tempo_config


def executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_pinned_binaries_come_only_from_the_tool_cache_and_others_from_it_first(tmp_path, monkeypatch):
    cache, elsewhere = tmp_path / "cache", tmp_path / "path"
    monkeypatch.setattr(lynx.stack, "TOOLS_BIN", cache)
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


def test_tempo_ports_and_paths_are_rewritten():
    config = tempo_config(load_config("tempo.yaml"), Path("/data"), TempoPorts(1, 2, 3, 4))
    assert config["server"]["http_listen_port"] == 1 and config["server"]["grpc_listen_port"] == 2
    assert config["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "127.0.0.1:3"
    assert config["memberlist"]["bind_port"] == 4
    assert config["storage"]["trace"]["local"]["path"] == "/data/blocks"
