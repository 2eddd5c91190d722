from lynx.local import observability, registry
from lynx.local.observability import PIECES, spans_endpoint
from lynx.local.topology import Topology


def test_a_first_run_builds_the_collector_first():
    # The services start once the collector runs: it is the piece they wait for, so it is built before the others.
    assert PIECES[0] == "otelcol"


def test_missing_pieces_keep_the_build_order(monkeypatch):
    present = {"prometheus"}
    monkeypatch.setattr(observability, "find_binary", lambda name: "/bin/x" if name in present else None)
    assert observability.missing() == ["otelcol", "jaeger"]


def test_spans_go_to_the_collector_whenever_it_runs_or_is_coming():
    topology = Topology.free()
    assert spans_endpoint(topology, {"otelcol", "jaeger"}) == topology.collector.otlp_url
    assert spans_endpoint(topology, {"otelcol"}) == topology.collector.otlp_url
    assert spans_endpoint(topology, {"jaeger", "prometheus"}) == topology.jaeger.otlp_url
    assert spans_endpoint(topology, {"prometheus"}) is None


def test_the_record_gathers_what_two_processes_started_and_goes_once_empty(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "run_dir", lambda: tmp_path)
    registry.record({"builds": 10, "otelcol": 11})
    registry.record({"gateway": 12})
    assert registry.recorded_pids() == {"builds": 10, "otelcol": 11, "gateway": 12}
    registry.forget(["builds"])
    assert registry.recorded_pids() == {"otelcol": 11, "gateway": 12}
    registry.forget(["otelcol", "gateway"])
    assert not registry.pids_file().exists()
