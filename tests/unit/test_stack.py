from pathlib import Path

from lynx.stack import TempoPorts, load_config, prometheus_config, tempo_config


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
