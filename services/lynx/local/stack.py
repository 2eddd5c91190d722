"""The observability stack beside the services: a Prometheus, the trace store (Jaeger v2) and the OpenTelemetry
Collector in front of it, from the configs in config/."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import yaml

from lynx.local.processes import ServiceProcess, free_port, start_process
from lynx.local.topology import CollectorPorts, JaegerPorts

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "config"
TOOLS_BIN = Path(os.environ.get("LYNX_TOOLS_CACHE", Path.home() / ".cache" / "lynx-tools")) / "bin"
# Binaries that must be the versions the chart deploys: only the tool cache's builds count, never another on PATH
# (Debian's Prometheus 2 reads PromQL differently from the chart's Prometheus 3; a Jaeger 1 reads no --config).
PINNED = frozenset({"prometheus", "promtool", "alertmanager", "amtool", "jaeger"})


def find_binary(name: str) -> Path | None:
    """In the tool cache scripts/build_tools.sh fills, else on PATH unless the binary is PINNED."""
    found = shutil.which(name, path=str(TOOLS_BIN))
    if not found and name not in PINNED:
        found = shutil.which(name)
    return Path(found) if found else None


def load_config(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


def prometheus_config(template: dict, targets: dict[str, str]) -> dict:
    """The template's jobs (named lynx-<service>) pointed at ``targets``; jobs with no target are dropped."""
    config = copy.deepcopy(template)
    for job in config["scrape_configs"]:
        service = job["job_name"].removeprefix("lynx-")
        if service in targets:
            job["static_configs"] = [{"targets": [targets[service]]}]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"].removeprefix("lynx-") in targets]
    return config



def jaeger_config(template: dict, data_dir: Path, ports: JaegerPorts) -> dict:
    """The template listening on ``ports``, keeping its traces (badger's keys and values) in ``data_dir``."""
    config = copy.deepcopy(template)
    extensions = config["extensions"]
    extensions["jaeger_query"]["http"]["endpoint"] = f"127.0.0.1:{ports.query_http}"
    extensions["jaeger_query"]["grpc"]["endpoint"] = f"127.0.0.1:{ports.query_grpc}"
    extensions["healthcheckv2"]["http"]["endpoint"] = f"127.0.0.1:{ports.health}"
    for backend in extensions["jaeger_storage"]["backends"].values():
        backend["badger"]["directories"] = {"keys": str(data_dir / "keys"), "values": str(data_dir / "values")}
    config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = f"127.0.0.1:{ports.otlp_http}"
    for reader in config["service"]["telemetry"]["metrics"]["readers"]:
        reader["pull"]["exporter"]["prometheus"]["port"] = ports.metrics
    return config


def start_prometheus(binary: Path, config: dict, work_dir: Path, port: int | None = None,
                     detached: bool = False) -> ServiceProcess:
    port = port or free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    argv = [str(binary), f"--config.file={config_file}", f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle", "--log.level=warn"]
    return start_process("prometheus", argv, dict(os.environ), work_dir / "prometheus.log",
                         f"http://127.0.0.1:{port}", ready_path="/-/ready", detached=detached)


def start_jaeger(binary: Path, template: dict, work_dir: Path, ports: JaegerPorts | None = None,
                 detached: bool = False) -> tuple[ServiceProcess, JaegerPorts]:
    """Jaeger with its traces in ``work_dir``/data, kept across restarts (one process per folder). The process's
    url is its health check's, ready once /status answers 200; ``ports`` say where to query it and send it spans."""
    ports = ports or JaegerPorts.free()
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "jaeger.yaml"
    config_file.write_text(yaml.safe_dump(jaeger_config(template, work_dir / "data", ports)))
    process = start_process("jaeger", [str(binary), f"--config={config_file}"], dict(os.environ),
                            work_dir / "jaeger.log", f"http://127.0.0.1:{ports.health}", ready_path="/status",
                            detached=detached)
    return process, ports



TRACE_STORE_EXPORTER = "otlp_http/tracestore"


def collector_config(template: dict, data_dir: Path, ports: CollectorPorts, trace_store_otlp: str) -> dict:
    """The template listening on ``ports``, keeping its queue in ``data_dir``, exporting to ``trace_store_otlp``."""
    config = copy.deepcopy(template)
    config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = f"127.0.0.1:{ports.otlp_http}"
    config["extensions"]["health_check"]["endpoint"] = f"127.0.0.1:{ports.health}"
    queue = config["extensions"]["file_storage/queue"]
    queue["directory"] = queue["compaction"]["directory"] = str(data_dir / "queue")
    config["exporters"][TRACE_STORE_EXPORTER]["endpoint"] = trace_store_otlp
    for reader in config["service"]["telemetry"]["metrics"]["readers"]:
        reader["pull"]["exporter"]["prometheus"]["port"] = ports.metrics
    return config


def start_collector(binary: Path, template: dict, work_dir: Path, trace_store_otlp: str,
                    ports: CollectorPorts | None = None, detached: bool = False) -> tuple[ServiceProcess, CollectorPorts]:
    """The collector forwarding to ``trace_store_otlp``; ready once its health_check answers. Its queue stays in
    ``work_dir`` across restarts, so spans it could not deliver before a stop are sent after the next start."""
    ports = ports or CollectorPorts.free()
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "otelcol.yaml"
    config_file.write_text(yaml.safe_dump(collector_config(template, work_dir / "data", ports, trace_store_otlp)))
    process = start_process("otelcol", [str(binary), f"--config={config_file}"], dict(os.environ),
                            work_dir / "otelcol.log", f"http://127.0.0.1:{ports.health}", ready_path="/",
                            detached=detached)
    return process, ports
