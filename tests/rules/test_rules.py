"""The chart's alerts and cost recording rules under `promtool test rules`, and its per-tenant routing under
`amtool`."""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider

from lynx.accounting.clock import StageClock
from lynx.accounting.ledger import Charge, Ledger
from lynx.accounting.pricing import NO_CALL, CostSettings, DecoderUse, RemoteCall, RequestTimes
from lynx.local.stack import find_binary
from lynx.telemetry.logs import JsonFormatter
from lynx.telemetry.metrics import COST_PER_1K_BUCKETS, STAGE_DURATION_BUCKETS, TTFT_BUCKETS

from .chart import (
    BUDGET_GROUP, COST_GROUP, alertmanager_config, budget_alerts, cost_records, helm_template, rules_file, write_rules,
)

HERE = Path(__file__).parent
UNIT_TESTS = sorted(HERE.glob("*.test.yml"))
COST_TESTS = HERE / "costs.test.yml"
RECEIVERS_SCENARIO = HERE.parents[1] / "charts" / "lynx" / "ci" / "tenant-receivers-values.yaml"
OPERATOR = {"operator": {"enabled": True}}  # the budget alerts come with the budget controller


def promtool() -> str:
    return str(find_binary("promtool") or pytest.fail("promtool is required: scripts/build_tools.sh prometheus builds it"))


def promtool_test(documents: list[dict], unit_tests: list[Path], directory: Path) -> subprocess.CompletedProcess:
    """`promtool test rules` on ``unit_tests``, copied beside the chart's rules they read as lynx-rules.yml."""
    directory.mkdir(exist_ok=True)
    write_rules(documents, directory)
    copies = [shutil.copy(test, directory / test.name) for test in unit_tests]
    return subprocess.run([promtool(), "test", "rules", *map(str, copies)], capture_output=True, text=True)


def is_long_term(resource: dict) -> bool:
    """The chart's own Prometheus of daily aggregates (templates/longterm.yaml), beside kube-prometheus-stack's."""
    return resource["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "long-term-metrics"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return helm_template(OPERATOR)


@pytest.mark.parametrize(("kind", "binaries"), [("Prometheus", ("prometheus", "promtool")),
                                                ("Alertmanager", ("alertmanager", "amtool"))])
def test_the_tests_run_the_versions_the_chart_deploys(rendered, kind: str, binaries: tuple[str, ...]):
    """These tests and the integration tests run what kube-prometheus-stack deploys: PromQL changed between
    Prometheus 2 and 3, and the rules, routes and panels must hold on the version users run."""
    resources = [d for d in rendered if d["kind"] == kind]
    (resource,) = [d for d in resources if not is_long_term(d)]
    # The long-term Prometheus runs the same version.
    assert {d["spec"]["version"] for d in resources} == {resource["spec"]["version"]}
    version = re.match(r"v?(\d+\.\d+\.\d+)", resource["spec"]["version"]).group(1)
    for name in binaries:
        binary = find_binary(name) or pytest.fail(f"{name} is required: scripts/build_tools.sh builds it")
        reported = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        assert f"{name}, version {version} " in reported.stdout + reported.stderr, reported.stdout + reported.stderr


def test_the_rules_pass_their_unit_tests(rendered, tmp_path):
    result = promtool_test(rendered, UNIT_TESTS, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def unit_test_cases(kind: str) -> list[dict]:
    """Every case of ``kind`` (alert_rule_test, promql_expr_test) in the unit test files."""
    return [case for test in UNIT_TESTS for group in yaml.safe_load(test.read_text())["tests"]
            for case in group.get(kind, [])]


def test_every_alert_is_tested_firing_and_not_firing(rendered):
    cases = unit_test_cases("alert_rule_test")
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    alerts = {rule["alert"] for rule in alert_rules(rendered)}
    groups = {g["name"] for g in rules_file(rendered)["groups"] if any("alert" in rule for rule in g["rules"])}
    assert groups == {"lynx.serving", "lynx.accounting", "lynx.notifications", BUDGET_GROUP}
    assert alerts - fired == set() and alerts - silent == set()


@pytest.mark.parametrize(("alert", "buckets"), [("LynxSlowTimeToFirstToken", TTFT_BUCKETS),
                                                ("LynxDecoderQueueSlow", STAGE_DURATION_BUCKETS),
                                                ("LynxCostPer1kOutputTokensHigh", COST_PER_1K_BUCKETS)])
def test_each_quantile_is_compared_at_a_bucket_boundary(rendered, alert: str, buckets: tuple[float, ...]):
    """histogram_quantile is exact at a boundary: p95 is above it exactly when more than 5 % of observations are.
    Between two boundaries it interpolates, and the alert would fire on a guess."""
    threshold = float(re.search(r">\s*([0-9.e+-]+)\s*$", alert_rule(rendered, alert)["expr"]).group(1))
    assert threshold in buckets


def test_the_thresholds_of_the_serving_cost_and_notification_alerts_come_from_the_values():
    documents = helm_template({"alerting": {
        "serving": {"rateWindow": "7m", "queueWaitP95Seconds": 2, "queueWaitFor": "13m", "modelErrorPercent": 25,
                    "modelErrorFor": "3m"},
        "costs": {"rateWindow": "9m", "per1kOutputTokensP95Eur": 0.25, "per1kOutputTokensFor": "17m"},
        "notifications": {"alertmanagerNamespace": "monitoring", "failedPercent": 5, "rateWindow": "30m",
                          "failingFor": "11m"}}})
    expected = {"LynxDecoderQueueSlow": ("[7m]", "> 2\n", "13m"), "LynxModelErrorSpike": ("[7m]", "> 0.25\n", "3m"),
                "LynxCostPer1kOutputTokensHigh": ("[9m]", "> 0.25\n", "17m"),
                "LynxAlertNotificationsFailing": ('{namespace="monitoring"}[30m]', "> 0.05\n", "11m")}
    for alert, (window, threshold, duration) in expected.items():
        rule = alert_rule(documents, alert)
        assert window in rule["expr"] and rule["expr"].endswith(threshold) and rule["for"] == duration, rule


def test_prometheus_scrapes_the_alertmanager_whose_notifications_are_watched(rendered):
    """kube-prometheus-stack's ServiceMonitor selects its Alertmanager's Service on the port Alertmanager serves
    /metrics on, Prometheus selects that ServiceMonitor, and the alert reads that namespace."""
    (prometheus,) = [d for d in rendered if d["kind"] == "Prometheus" and not is_long_term(d)]
    (alertmanager,) = [d for d in rendered if d["kind"] == "Alertmanager"]
    namespace = alertmanager["metadata"]["namespace"]
    (service,) = [d for d in rendered if d["kind"] == "Service" and d["metadata"]["namespace"] == namespace
                  and d["spec"].get("selector", {}).get("alertmanager") == alertmanager["metadata"]["name"]]
    wanted = prometheus["spec"]["serviceMonitorSelector"]["matchLabels"]
    monitors = [d for d in rendered if d["kind"] == "ServiceMonitor"
                and wanted.items() <= d["metadata"]["labels"].items()
                and d["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
                and namespace in d["spec"].get("namespaceSelector", {}).get("matchNames", [namespace])]
    web = {p["name"] for p in service["spec"]["ports"] if p["port"] == 9093}
    assert any(e["port"] in web and e.get("path", "/metrics") == "/metrics" for m in monitors
               for e in m["spec"]["endpoints"]), monitors
    assert f'namespace="{namespace}"' in alert_rule(rendered, "LynxAlertNotificationsFailing")["expr"]


def test_the_identity_alert_points_to_log_fields_the_ledger_writes(rendered, caplog):
    """The description names the events and fields to look for; a request that fails the identity check is logged
    with every one of them."""
    description = alert_rule(rendered, "LynxCostIdentityViolation")["annotations"]["description"]
    fields = set(re.findall(r"`([a-z_]+)`", description))
    clock = StageClock()
    with clock.stage("gateway"), clock.stage("tokenize"):  # a stage timed inside another: counted twice
        time.sleep(0.03)
    times = RequestTimes(wall_seconds=clock.elapsed(), gateway_seconds=clock.seconds["gateway"],
                         tokenize=RemoteCall(0.0, clock.seconds["tokenize"]), retrieve=NO_CALL,
                         decoder=DecoderUse(wall_seconds=0.0), interrupted_seconds=clock.interrupted_seconds())
    with caplog.at_level(logging.INFO, logger="lynx.ledger"):
        Ledger(CostSettings()).charge(Charge(tenant="t", model="m", outcome="completed", times=times, prompt_tokens=1,
                                             completion_tokens=1, finish_reason="stop", trace_id="ab" * 16,
                                             request_id="r1"), TracerProvider().get_tracer("test").start_span("r"))
    (record,) = [r for r in caplog.records if r.name == "lynx.ledger" and r.getMessage() in description]
    event = json.loads(JsonFormatter("lynx-gateway").format(record))
    assert event["event"] == "cost_identity_violation" and event["reason"] == "stage_counted_twice"
    assert fields and fields <= event.keys() and event["trace_id"] == "ab" * 16, (fields, sorted(event))


def test_every_budget_alert_says_how_bad_and_what_to_do(rendered):
    for rule in budget_alerts(rendered):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, rule["alert"]


def test_the_thresholds_come_from_the_values(tmp_path):
    documents = helm_template({**OPERATOR, "alerting": {"budgets": {"warningPercent": 50, "criticalPercent": 90,
                                                                "spendFor": "0s"}}})
    test = {"rule_files": ["lynx-rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'lynx_budget_cap_eur{namespace="lynx",tenant="acme"}', "values": "10x5"},
                         {"series": 'lynx_budget_spent_eur{namespace="lynx",tenant="acme"}', "values": "4 6 9 9 9 9"}],
        "alert_rule_test": [
            {"eval_time": "0m", "alertname": "LynxTenantBudgetNearCap", "exp_alerts": []},
            {"eval_time": "1m", "alertname": "LynxTenantBudgetNearCap", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "lynx", "tenant": "acme"},
                "exp_annotations": annotations(documents, "LynxTenantBudgetNearCap",
                                               "Tenant acme has spent 60% of today's cap.", spent="6", used="60%")}]},
            {"eval_time": "2m", "alertname": "LynxTenantBudgetExhausted", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": "lynx", "tenant": "acme"},
                "exp_annotations": annotations(documents, "LynxTenantBudgetExhausted",
                                               "Tenant acme reached its daily cap (90% spent).", spent="9",
                                               used="90%")}]}]}]}
    (tmp_path / "thresholds.test.yml").write_text(yaml.safe_dump(test))
    result = promtool_test(documents, [tmp_path / "thresholds.test.yml"], tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_console_link_comes_from_the_values_and_escapes_the_tenant(tmp_path):
    """The console's address is a setting (Prometheus cannot know it); a tenant id with a space or a plus still
    opens that tenant's page."""
    documents = helm_template({**OPERATOR, "alerting": {"consoleUrl": "https://lynx.example.com/",
                                                        "budgets": {"spendFor": "0s"}}})
    tenant = 'tenant="acme corp+1"'
    test = {"rule_files": ["lynx-rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": f'lynx_budget_cap_eur{{namespace="lynx",{tenant}}}', "values": "2x2"},
                         {"series": f'lynx_budget_spent_eur{{namespace="lynx",{tenant}}}', "values": "2x2"}],
        "alert_rule_test": [{"eval_time": "1m", "alertname": "LynxTenantBudgetExhausted", "exp_alerts": [{
            "exp_labels": {"severity": "critical", "namespace": "lynx", "tenant": "acme corp+1"},
            "exp_annotations": {
                **annotations(documents, "LynxTenantBudgetExhausted",
                              "Tenant acme corp+1 reached its daily cap (100% spent).", spent="2", used="100%"),
                "cap_eur": "2", "console_url": "https://lynx.example.com/console/tenants/acme%20corp%2B1"}}]}]}]}
    (tmp_path / "console.test.yml").write_text(yaml.safe_dump(test))
    result = promtool_test(documents, [tmp_path / "console.test.yml"], tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_cost_record_is_tested(rendered):
    tested = {name for case in unit_test_cases("promql_expr_test") for name in re.findall(r"[a-z_]+:[a-z_]+:\w+",
                                                                                          case["expr"])}
    assert {rule["record"] for rule in cost_records(rendered)} <= tested


def with_cost_exprs(documents: list[dict], change: Callable[[str], str]) -> list[dict]:
    """The rendered chart with ``change`` applied to the expression of every cost recording rule."""
    changed = copy.deepcopy(documents)
    for rule in cost_records(changed):
        rule["expr"] = change(rule["expr"])
    return changed


@pytest.mark.parametrize("change", [
    lambda expr: expr.replace("[1d]", "[1h]"),
    lambda expr: expr.replace("increase(", "rate("),
    lambda expr: expr.replace("increase(", "delta("),
    lambda expr: expr.replace("sum by", "max by"),
    lambda expr: re.sub(r'namespace="[^"]*",', "", expr),
], ids=["last-hour", "per-second", "restart-blind", "one-replica", "any-namespace"])
def test_a_rule_that_does_not_compute_the_daily_cost_fails_its_unit_tests(rendered, change, tmp_path):
    wrong = with_cost_exprs(rendered, change)
    assert cost_records(wrong) != cost_records(rendered)
    result = promtool_test(wrong, [COST_TESTS], tmp_path)
    assert result.returncode == 1 and "FAILED" in result.stdout + result.stderr, result.stdout + result.stderr


def alert_rules(documents: list[dict]) -> list[dict]:
    return [rule for group in rules_file(documents)["groups"] for rule in group["rules"] if "alert" in rule]


def alert_rule(documents: list[dict], alert: str) -> dict:
    (rule,) = [rule for rule in alert_rules(documents) if rule["alert"] == alert]
    return rule


def annotations(documents: list[dict], alert: str, summary: str, spent: str, used: str) -> dict:
    """What the alert of tenant acme (cap 10 EUR, no state or reset time exported) says at the chart's default
    console URL."""
    rule = next(r for r in budget_alerts(documents) if r["alert"] == alert)
    return {"summary": summary, "description": rule["annotations"]["description"], "spent_eur": spent, "cap_eur": "10",
            "percent_used": used, "state": "unknown", "resets_at": "unknown",
            "console_url": "http://127.0.0.1:8087/console/tenants/acme"}


@pytest.mark.parametrize("values", [{**OPERATOR, "alerting": {"budgets": {"enabled": False}}}, {}],
                         ids=["alerts-off", "no-operator"])
def test_without_budget_alerts_the_other_rules_stay(values: dict, tmp_path):
    documents = helm_template(values)
    groups = [g["name"] for g in rules_file(documents)["groups"]]
    assert COST_GROUP in groups and BUDGET_GROUP not in groups
    result = subprocess.run([promtool(), "check", "rules", str(write_rules(documents, tmp_path))], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_receivers_render_no_alertmanager_config(rendered):
    assert not [d for d in rendered if d["kind"] == "AlertmanagerConfig"]


def tenant_receiver(documents: list[dict], tenant: str) -> dict:
    (config,) = [d for d in documents if d["kind"] == "AlertmanagerConfig"]
    (found,) = [r for r in config["spec"]["receivers"] if r["name"] == f"tenant-{tenant}"]
    return found


def test_a_tenants_email_lays_out_every_annotation_of_its_alerts():
    """The email template and the alerts' annotations are written apart (the AlertmanagerConfig, the
    PrometheusRule): every annotation the budget alerts carry shows in the text and the HTML body, the summary is
    the subject, and the other receiver kinds are left as they were."""
    documents = helm_template(yaml.safe_load(RECEIVERS_SCENARIO.read_text()))
    acme = tenant_receiver(documents, "acme")
    (email,) = acme["emailConfigs"]
    names = {name for alert in ("LynxTenantBudgetNearCap", "LynxTenantBudgetExhausted")
             for name in alert_rule(documents, alert)["annotations"]}
    assert {"spent_eur", "cap_eur", "percent_used", "state", "resets_at", "console_url"} < names
    for body in (email["text"], email["html"]):
        assert {name for name in names if f".Annotations.{name} " not in body} == set(), body
    assert email["headers"] == [{"key": "Subject", "value":
                                 '{{ if eq .Status "resolved" }}Resolved: {{ end }}{{ .CommonAnnotations.summary }}'}]
    assert email["to"] == "finance@acme.example" and email["sendResolved"] is True
    assert set(acme["webhookConfigs"][0]) == {"url", "sendResolved"}


def test_a_tenants_own_email_text_wins():
    scenario = yaml.safe_load(RECEIVERS_SCENARIO.read_text())
    scenario["alerting"]["tenantReceivers"]["acme"]["email"]["text"] = "Budget alert: {{ .CommonLabels.tenant }}"
    (email,) = tenant_receiver(helm_template(scenario), "acme")["emailConfigs"]
    assert email["text"] == "Budget alert: {{ .CommonLabels.tenant }}" and ".Annotations.console_url" in email["html"]


@pytest.mark.parametrize(("labels", "receiver"), [
    ({"tenant": "acme", "alertname": "LynxTenantBudgetExhausted"}, "lynx/lynx-tenants/tenant-acme"),
    ({"tenant": "globex", "alertname": "LynxTenantBudgetNearCap"}, "lynx/lynx-tenants/tenant-globex"),
    ({"tenant": "initech", "alertname": "LynxTenantBudgetNearCap"}, "lynx/lynx-tenants/no-tenant-receiver"),
    ({"alertname": "LynxBudgetSpendStale"}, "cluster-default"),
    ({"tenant": "acme", "alertname": "LynxTenantBudgetExhausted", "namespace": "staging"}, "cluster-default"),
])
def test_alertmanager_routes_each_tenant_to_its_own_receivers(labels: dict, receiver: str, tmp_path):
    """The chart's ci scenario through amtool's own router, as the Prometheus operator merges it."""
    amtool = find_binary("amtool") or pytest.fail("amtool is required: scripts/build_tools.sh alertmanager builds it")
    documents = helm_template(yaml.safe_load(RECEIVERS_SCENARIO.read_text()))
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(documents, {"name": "cluster-default"})))
    checked = subprocess.run([str(amtool), "check-config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alert = {"namespace": "lynx", "severity": "critical", **labels}
    routed = subprocess.run([str(amtool), "config", "routes", "test", f"--config.file={config}",
                             *(f"{k}={v}" for k, v in alert.items())], capture_output=True, text=True)
    assert routed.returncode == 0 and routed.stdout.split() == [receiver], routed.stdout + routed.stderr
