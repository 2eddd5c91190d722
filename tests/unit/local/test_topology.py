from pathlib import Path

from lynx.local.topology import (
    SERVEABLE, BudgetFiles, Topology, auditor_environment, budget_loop_environment, models_environment,
    upstreams_environment,
)


def test_a_free_topology_binds_each_port_once_and_scrapes_every_serveable():
    topology = Topology.free()
    assert len(set(topology.all_ports())) == len(topology.all_ports()) == len(SERVEABLE) + 1 + 3 + 5
    assert topology.scrape_targets() == {name: f"127.0.0.1:{topology.services[name]}" for name in SERVEABLE}
    assert topology.url("gateway") == f"http://127.0.0.1:{topology.services['gateway']}"


def test_the_configured_topology_follows_the_services_settings(monkeypatch):
    monkeypatch.setenv("LYNX_TOKENIZER_PORT", "18081")
    topology = Topology.configured()
    assert topology.services["tokenizer"] == 18081
    assert topology.services["gateway"] == 8080
    # The gateway is wired to where the tokenizer really listens, not to the gateway settings' default.
    urls = upstreams_environment({name: topology.url(name) for name in ("tokenizer", "retriever", "decoder")})
    assert urls["LYNX_GATEWAY_TOKENIZER_URL"] == "http://127.0.0.1:18081"


def test_environments_name_each_setting_once():
    models = models_environment(Path("/m"))
    assert models == {"LYNX_TOKENIZER_MODEL_DIR": "/m/decoder", "LYNX_DECODER_MODEL_DIR": "/m/decoder",
                      "LYNX_RETRIEVER_EMBEDDER_DIR": "/m/embedder"}
    files = BudgetFiles.in_folder(Path("/b"))
    loop = budget_loop_environment(files, "http://p:9090", interval_seconds=1)
    assert loop["LYNX_BUDGETS_DECISIONS_FILE"] == "/b/budget-decisions.json"
    assert loop["LYNX_BUDGETS_INTERVAL_SECONDS"] == "1"
    assert "LYNX_BUDGETS_INTERVAL_SECONDS" not in budget_loop_environment(files, "http://p:9090")
    auditor = auditor_environment("http://j:16686", 60, export_delay_seconds=5)
    assert auditor["LYNX_AUDITOR_REQUEST_DEADLINE_SECONDS"] == "60"
    assert auditor["LYNX_AUDITOR_EXPORT_DELAY_SECONDS"] == "5"
    assert "LYNX_AUDITOR_LOOKBACK_SECONDS" not in auditor


def test_the_environments_are_read_by_the_settings_they_are_meant_for(monkeypatch):
    from lynx.auditor.settings import AuditorSettings
    from lynx.gateway.settings import GatewaySettings
    from lynx_budget.local import LocalBudgetSettings

    files = BudgetFiles.in_folder(Path("/b"))
    for name, value in {**budget_loop_environment(files, "http://p:9090", 2),
                        **auditor_environment("http://j:16686", 60, 5, 2, 900),
                        **upstreams_environment({"tokenizer": "http://t:1", "retriever": "http://r:2",
                                                 "decoder": "http://d:3"})}.items():
        monkeypatch.setenv(name, value)
    loop, auditor, gateway = LocalBudgetSettings(), AuditorSettings(), GatewaySettings()
    assert (loop.budgets_file, loop.state_file, loop.decisions_file) == (files.budgets, files.state, files.decisions)
    assert (loop.leases_file, loop.lease_token_file) == (files.leases, files.lease_token)
    assert (loop.prometheus_url, loop.interval_seconds) == ("http://p:9090", 2)
    assert (auditor.trace_store_url, auditor.request_deadline_seconds, auditor.export_delay_seconds,
            auditor.interval_seconds, auditor.lookback_seconds) == ("http://j:16686", 60, 5, 2, 900)
    assert (gateway.tokenizer_url, gateway.retriever_url, gateway.decoder_url) == ("http://t:1", "http://r:2",
                                                                                    "http://d:3")


def test_free_ports_are_outside_the_kernels_ephemeral_range_and_never_handed_out_twice():
    """An outgoing connection takes its local port from the ephemeral range: a free port chosen there could be
    taken before its server binds it."""
    import socket

    from lynx.local.processes import EPHEMERAL_RANGE, port_is_free, free_port
    ephemeral_start = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < ephemeral_start for port in ports)
    with socket.socket() as listening:  # a port in use is not offered
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert not port_is_free(listening.getsockname()[1])
