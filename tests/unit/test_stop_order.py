"""The order `lynx down` stops a run in: what Prometheus scrapes first, then Prometheus, the collector, Jaeger."""

from lynx.local.stopping import STOP_GRACE_SECONDS, stop_grace, stop_phases

RUN = {"jaeger": 1, "otelcol": 2, "auditor": 3, "prometheus": 4, "tokenizer": 5, "retriever": 6, "decoder": 7,
       "gateway": 8, "budgets": 9}


def phase_of(pid: int) -> int:
    return next(index for index, (pids, _) in enumerate(stop_phases(RUN.items())) if pid in pids)


def test_what_prometheus_scrapes_stops_before_it_which_stops_before_the_collector_and_jaeger():
    scraped = {phase_of(RUN[name]) for name in ("gateway", "tokenizer", "retriever", "decoder", "budgets", "auditor")}
    assert scraped == {0}
    assert phase_of(RUN["prometheus"]) == 1
    assert phase_of(RUN["otelcol"]) == 2 and phase_of(RUN["jaeger"]) == 3


def test_every_process_is_stopped_once():
    stopped = [pid for pids, _ in stop_phases(RUN.items()) for pid in pids]
    assert sorted(stopped) == sorted(RUN.values())


def test_a_process_lynx_does_not_know_stops_with_the_services_and_their_grace():
    phases = stop_phases([("grafana", 10)])
    assert phases[0] == ([10], STOP_GRACE_SECONDS) and stop_grace("grafana") == STOP_GRACE_SECONDS
    assert stop_grace("jaeger") <= stop_grace("otelcol") < STOP_GRACE_SECONDS
