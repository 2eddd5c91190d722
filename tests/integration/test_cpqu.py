"""The CpQU batch against the real gateway and Prometheus, writing into a copy of docs/COSTS.md."""

from __future__ import annotations

import httpx
import pytest

from lynx.tools.dashboards.build import COSTS_DOC, CPQU_END, CPQU_START, cpqu_table
from lynx.accounting.tenants import TenantRegistry
from lynx.tools.quality.cpqu import load_questions, parse_table, run, update_document

from .conftest import MODEL_NAME, ObservedStack


def test_cpqu_reads_the_cost_from_prometheus_and_writes_the_weeks_row(observed: ObservedStack, base_env, tmp_path):
    from pathlib import Path

    key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add("cpqu-eval")
    row = run(observed.services.gateway.url, observed.prometheus.url, key, "cpqu-eval", MODEL_NAME)
    assert row.questions == len(load_questions())
    assert 0 < row.correct <= row.questions
    assert row.cost_eur > 0
    assert row.cpqu == pytest.approx(row.cost_eur / row.correct)
    # The same number as Prometheus' own answer for that tenant.
    spent = observed.query('sum(lynx_tenant_cost_eur_total{tenant="cpqu-eval"})')
    assert float(spent[0]["value"][1]) == pytest.approx(row.cost_eur, rel=1e-6)

    document = tmp_path / "COSTS.md"
    document.write_text(update_document(COSTS_DOC.read_text(), row, CPQU_START, CPQU_END))
    rows = parse_table(cpqu_table(document))
    assert rows[-1].week == row.week and rows[-1].correct == row.correct
    assert httpx.get(f"{observed.services.gateway.url}/readyz").status_code == 200
