"""The chaos script's checks: records and readings in, a verdict out."""

from __future__ import annotations

from lynx.telemetry.tracestore import StoredSpan
from lynx.tools.chaos.checks import (
    TraceAudit, answered_check, audit_spans, blocked_check, classify, cost_check, costs_agree, drain_check,
    label_matcher, missing_traces_check, orphans_check, recovered_check, violations_check,
)
from lynx.tools.chaos.scenarios import Run, open_streams_check
from lynx.tools.chaos.targets import Disruption
from lynx.tools.load.driver import RequestRecord


def request(outcome: str = "ok", error_type: str | None = None, status: int | None = 200, cost: float | None = 1e-5,
            started: float = 100.0, latency: float = 1.0, stream: bool = False, trace: str = "a" * 32,
            ttft: float | None = None) -> RequestRecord:
    return RequestRecord(started_at=started, tenant="t", stream=stream, status=status, outcome=outcome,
                         error_type=error_type, trace_id=trace, cost_eur=cost, latency_s=latency, ttft_s=ttft,
                         inter_token_s=(), completion_tokens=None)


def span(span_id: str, parent: str = "") -> StoredSpan:
    return StoredSpan("t" * 32, span_id, parent, f"span-{span_id}", "lynx-gateway")


def test_a_refused_connection_is_not_a_reset_but_a_connection_cut_after_sending_is():
    assert classify(request()) == "ok"
    assert classify(request("http_error", "upstream_unavailable", 503)) == "error"
    assert classify(request("reset", "ConnectError", None, None)) == "refused"
    assert classify(request("reset", "ReadError", None, None)) == "reset"
    assert classify(request("timeout", "ReadTimeout", None, None)) == "timeout"
    assert classify(request("malformed", "incomplete_stream")) == "malformed"


def test_answers_and_clean_errors_pass_resets_timeouts_and_malformed_bodies_fail():
    answered = [request(), request("http_error", "gateway_stopping", 503), request("reset", "ConnectError", None)]
    check = answered_check(answered)
    assert check.ok and check.measured.startswith("3 sent: 1 ok, 1 clean errors, 1 refused")
    for bad in ("reset", "timeout", "malformed"):
        check = answered_check([*answered, request(bad, "ReadError", None, trace="f" * 32)])
        assert not check.ok and "f" * 32 in check.detail, bad
    assert not answered_check([]).ok


def test_recovery_needs_a_request_sent_after_the_disruption_began_and_ended_after_it_was_over():
    served_late = request(started=105.0, latency=10.0)  # sent during the disruption, answered after it
    assert recovered_check([request(started=90.0, latency=30.0), served_late], 100.0, 110.0).ok
    assert not recovered_check([request(started=90.0, latency=30.0)], 100.0, 110.0).ok  # sent before it began
    assert not recovered_check([request("http_error", status=503, started=111.0)], 100.0, 110.0).ok


def test_orphans_and_missing_traces_are_counted_from_what_the_trace_store_returned():
    whole = audit_spans("1" * 32, [span("a"), span("b", "a")])
    broken = audit_spans("2" * 32, [span("a"), span("c", "never-exported")])
    missing = TraceAudit("3" * 32, 0)
    assert orphans_check([whole]).ok and missing_traces_check([whole]).ok
    check = orphans_check([whole, broken])
    assert not check.ok and check.measured.startswith("1 in 4 spans of 2 traces") and "never-exported" in check.detail
    check = missing_traces_check([whole, missing])
    assert not check.ok and check.measured == "1 of 2" and "3" * 32 in check.detail


def test_costs_agree_within_a_tenth_of_a_percent():
    assert costs_agree(1.0, 1.0009) and costs_agree(1.0009, 1.0)
    assert not costs_agree(1.0, 1.0011) and not costs_agree(1.0011, 1.0)
    assert costs_agree(0.0, 0.0) and costs_agree(0.0, 1e-15)
    assert not costs_agree(0.0, 1e-6)


def test_the_cost_check_sums_what_clients_were_told_including_error_bodies_and_uncharged_refusals():
    records = [request(cost=2e-5), request("http_error", "upstream_unavailable", 503, cost=1e-6),
               request("http_error", "insufficient_quota", 429, cost=None), request("reset", "ConnectError", None, None)]
    assert cost_check(records, 2.1e-5).ok
    assert not cost_check(records, 2.0e-5).ok  # the failed request's charge is missing from the counter
    assert not cost_check(records, 2.2e-5).ok  # the counter holds a charge no client was told about


def test_violations_pass_only_at_zero():
    assert violations_check(0.0).ok and not violations_check(1.0).ok


def stop(action: str, within_grace: bool = True, at: float = 100.0, gone: float = 2.0) -> Disruption:
    return Disruption(action, "gateway", "pid 1", at, gone, 5.0, within_grace)


def test_every_graceful_stop_must_end_by_itself_within_its_grace():
    assert drain_check([stop("restart"), stop("restart", gone=7.5)]).ok
    check = drain_check([stop("restart"), stop("restart", within_grace=False)])
    assert not check.ok and "SIGKILL at grace" in check.detail
    assert not drain_check([stop("kill")]).ok  # nothing was stopped gracefully: nothing shown


def test_a_blocked_tenant_must_be_refused_every_time():
    assert blocked_check([429, 429, 429]).ok
    assert not blocked_check([429, 200, 429]).ok
    assert not blocked_check([429, None]).ok  # no answer is not a refusal
    assert not blocked_check([]).ok


def test_streams_at_a_signal_are_those_generating_then():
    run = Run(2, 0.0, disruptions=[stop("restart", at=100.0)])
    generating = request(started=99.0, latency=3.0, stream=True, ttft=0.5)
    before = request(started=90.0, latency=3.0, stream=True, ttft=0.5)
    not_yet = request("http_error", "upstream_unavailable", 503, started=99.8, latency=3.0, stream=True)
    not_a_stream = request(started=99.0, latency=3.0)
    check = open_streams_check(run, [generating, before, not_yet, not_a_stream], complete=True)
    assert check.ok and check.measured == "1 of 1"
    cut = request("http_error", "gateway_stopping", 503, started=99.0, latency=3.0, stream=True, ttft=0.5)
    assert open_streams_check(run, [cut], complete=False).ok
    assert not open_streams_check(run, [cut], complete=True).ok  # a graceful stop serves it to its end
    assert not open_streams_check(run, [before], complete=True).ok  # none was open: the scenario proved nothing


def test_tenant_ids_are_matched_as_literals():
    assert label_matcher("tenant", ["b", "a.c"]) == r'tenant=~"a\\.c|b"'
