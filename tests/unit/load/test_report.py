import statistics

import pytest

from lynx.tools.load.driver import RequestRecord
from lynx.tools.load.report import (
    ErrorCount, Machine, MemoryChange, cost_per_1k_tokens, errors_by_type, percentile, render_markdown, summarize,
)


def record(**fields) -> RequestRecord:
    values = {"started_at": 1000.0, "tenant": "0123abcd", "stream": False, "status": 200, "outcome": "ok",
              "error_type": None, "trace_id": "t" * 32, "cost_eur": 2e-6, "latency_s": 0.5, "ttft_s": None,
              "inter_token_s": (), "completion_tokens": 4}
    return RequestRecord(**{**values, **fields})


def failed(outcome: str, error_type: str | None, status: int | None = None) -> RequestRecord:
    return record(outcome=outcome, error_type=error_type, status=status, cost_eur=None, completion_tokens=None)


def test_percentiles_agree_with_the_standard_library():
    values = [0.31, 0.05, 1.7, 0.42, 0.42, 0.9, 2.5, 0.11, 0.64, 3.3, 0.27]
    # statistics' "inclusive" method interpolates between closest ranks, as numpy does by default.
    expected = statistics.quantiles(values, n=100, method="inclusive")
    for q in range(1, 100):
        assert percentile(values, q) == pytest.approx(expected[q - 1])
    assert percentile(values, 0) == min(values) and percentile(values, 100) == max(values)


def test_percentiles_of_few_values():
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.5


def test_cost_per_1k_tokens_counts_whole_priced_answers_only():
    records = [record(cost_eur=2e-6, completion_tokens=4), record(cost_eur=3e-6, completion_tokens=10),
               record(cost_eur=1e-6, completion_tokens=0), record(cost_eur=None),
               record(outcome="http_error", error_type="deadline_exceeded", status=504, cost_eur=5e-6)]
    assert cost_per_1k_tokens(records) == pytest.approx([5e-4, 3e-4])


def test_errors_are_counted_by_outcome_and_type_most_frequent_first():
    records = [record(), failed("http_error", "queue_full", 503), failed("reset", "ConnectError"),
               failed("http_error", "queue_full", 503), failed("malformed", None, 502), record()]
    assert errors_by_type(records) == (ErrorCount("http_error", "queue_full", 2),
                                       ErrorCount("malformed", "unknown", 1), ErrorCount("reset", "ConnectError", 1))


def test_summary_of_a_run():
    records = [record(latency_s=0.2, completion_tokens=4, cost_eur=4e-6),
               record(stream=True, latency_s=0.4, ttft_s=0.1, inter_token_s=(0.02, 0.04), completion_tokens=6,
                      cost_eur=3e-6),
               record(stream=True, latency_s=0.6, ttft_s=0.3, inter_token_s=(0.06,), completion_tokens=2,
                      cost_eur=1e-6),
               failed("timeout", "ReadTimeout")]
    report = summarize(records, duration_s=2.0, memory=[MemoryChange("gateway", 100.0, 150.0)])
    assert (report.requests, report.ok, report.streamed) == (4, 3, 2)
    assert report.requests_per_s == 2.0 and report.output_tokens == 12 and report.tokens_per_s == 6.0
    assert report.latency_s.p50 == pytest.approx(0.4)  # of the requests that ended ok only
    assert report.ttft_s.p50 == pytest.approx(0.2) and report.ttft_s.p99 == pytest.approx(0.298)
    assert report.inter_token_s.p50 == pytest.approx(0.04)
    assert report.cost_eur == pytest.approx(8e-6)
    assert report.cost_per_1k_tokens_mean_eur == pytest.approx((1e-3 + 5e-4 + 5e-4) / 3)
    assert report.cost_per_1k_tokens_p95_eur == pytest.approx(5e-4 + 0.9 * 5e-4)
    assert report.errors == (ErrorCount("timeout", "ReadTimeout", 1),)


def test_markdown_starts_with_the_command_and_shows_what_was_not_measured():
    report = summarize([failed("reset", "ConnectError")], duration_s=1.0,
                       memory=[MemoryChange("decoder", None, 200 * 1024 * 1024)], machine=Machine(2, 0.52, 1.48))
    markdown = render_markdown(report, "lynx load --requests 1", ["latency.png"])
    assert markdown.startswith("# lynx load\n\n```sh\nlynx load --requests 1\n```\n")
    assert "| requests | 1 |" in markdown and "| ok | 0 |" in markdown
    assert "| reset | ConnectError | 1 |" in markdown
    assert "| client machine | 2 cores, load average 0.5 at the start, 1.5 at the end |" in markdown
    assert "| decoder | n/a | 200.0 | n/a |" in markdown
    assert "| latency | n/a | n/a | n/a |" in markdown
    assert "![latency](latency.png)" in markdown
