"""Every panel of every dashboard has a contract: its queries return data from a real Prometheus
scraping the real services, within 60 seconds of one warm-up request."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import httpx
import pytest
import yaml

from lynx.dashboards.build import all_dashboards
from lynx.stack import find_binary

from .conftest import MODEL_NAME, ObservedStack

CONTRACT_SECONDS = 60
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", '"$job"': '".+"',
                     "$job": ".+"}
METRIC_NAME = re.compile(r"\b((?:lynx|process)_[a-z0-9_]+)\b")


def expand(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expanded PromQL) for every target of every panel."""
    return [(name, panel["title"], expand(target["expr"]))
            for name, board in all_dashboards().items() for panel in board["panels"]
            for target in panel.get("targets", [])]


def exported_names(stack: ObservedStack) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for service in (stack.services.gateway, stack.services.tokenizer, stack.services.retriever,
                    stack.services.decoder, stack.auditor):
        for family in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text):
            names.update(sample.name for sample in family.samples)
    return names


def warm_up(stack: ObservedStack) -> None:
    response = httpx.post(f"{stack.services.gateway.url}/v1/chat/completions", headers=stack.services.headers(),
                          timeout=60, json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8,
                                            "messages": [{"role": "user", "content": "What is a Python list?"}]})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def fresh_prometheus(observed: ObservedStack, tmp_path_factory):
    """A Prometheus that has seen nothing yet, so time to first data is measured from the warm-up."""
    prometheus = observed.start_prometheus(tmp_path_factory.mktemp("fresh-prometheus"))
    yield prometheus
    prometheus.stop()


def test_every_panel_returns_data_within_a_minute_of_one_request(observed: ObservedStack, fresh_prometheus, capsys):
    warm_up(observed)
    started = time.monotonic()
    waiting = {(board, title, expr) for board, title, expr in panel_queries()}
    first_data: dict[tuple[str, str, str], float] = {}
    while waiting and time.monotonic() - started < CONTRACT_SECONDS:
        for query in sorted(waiting):
            if observed.query(query[2], fresh_prometheus):
                first_data[query] = time.monotonic() - started
                waiting.discard(query)
        time.sleep(1)
    with capsys.disabled():
        print("\npanel time-to-first-data:")
        for (board, title, _), seconds in sorted(first_data.items(), key=lambda item: item[1]):
            print(f"  {seconds:5.1f} s  {board} / {title}")
    assert not waiting, "panels with no data after 60 s:\n" + "\n".join(f"{b} / {t}: {e}" for b, t, e in waiting)


def test_no_panel_references_a_metric_that_no_service_exports(observed: ObservedStack):
    warm_up(observed)
    exported = exported_names(observed)
    missing = {(title, name) for _, title, expr in panel_queries() for name in METRIC_NAME.findall(expr)
               if name not in exported}
    assert not missing, f"metrics no service exports: {sorted(missing)}"


def test_every_expression_parses_with_promtool(tmp_path):
    promtool = find_binary("promtool") or pytest.fail("promtool (Debian's prometheus package) is required")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"lynx:panel_{index}", "expr": expr} for index, (_, _, expr) in enumerate(panel_queries())]}]}
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert shutil.which(str(promtool))


def test_prometheus_stores_exemplars_with_trace_ids(observed: ObservedStack):
    response = httpx.post(f"{observed.services.gateway.url}/v1/chat/completions", headers=observed.services.headers(),
                          timeout=60, json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "Hello"}]})
    trace_id = response.json()["lynx"]["trace_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = httpx.get(f"{observed.prometheus.url}/api/v1/query_exemplars", params={
            "query": "lynx_cost_eur_per_request_bucket", "start": time.time() - 600, "end": time.time() + 5}).json()
        ids = {e["labels"].get("trace_id") for series in found["data"] for e in series["exemplars"]}
        if trace_id in ids:
            return
        time.sleep(1)
    pytest.fail(f"no exemplar with trace_id {trace_id} in Prometheus")
