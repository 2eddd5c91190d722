"""The chart's alerting objects, rendered by `helm template`, as plain Prometheus and Alertmanager configuration.

A PrometheusRule's spec is a Prometheus rules file as it is. An AlertmanagerConfig becomes, as the Prometheus
operator merges it into the Alertmanager's configuration, a sub-route of the root route matching the release
namespace, with `continue: true`, its receivers named `<namespace>/<name>/<receiver>`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lynx.local.stack import find_binary

from ..cluster.conftest import CHART, KUBE_VERSION, UPSTREAM_ARCHIVES, shared_charts

BUDGET_GROUP = "lynx-budgets"
COST_GROUP = "lynx.costs"
# The fields of the AlertmanagerConfig receivers the chart writes, as Alertmanager's configuration spells them.
RECEIVER_KINDS = {"webhookConfigs": "webhook_configs", "emailConfigs": "email_configs", "slackConfigs": "slack_configs"}
ROUTE_FIELDS = {"receiver": "receiver", "groupBy": "group_by", "groupWait": "group_wait",
                "groupInterval": "group_interval", "repeatInterval": "repeat_interval", "continue": "continue"}


def helm_template(values: dict, release: str = "lynx", namespace: str = "lynx") -> list[dict]:
    """Every object of the chart, rendered with ``values`` over the defaults (dependencies copied in offline)."""
    helm = find_binary("helm") or pytest.fail("helm is required: scripts/build_tools.sh builds it")
    (CHART / "charts").mkdir(exist_ok=True)
    for archive in UPSTREAM_ARCHIVES:
        if not (CHART / "charts" / archive).is_file():
            shutil.copy2(shared_charts() / archive, CHART / "charts" / archive)
    result = subprocess.run([str(helm), "template", release, str(CHART), "--namespace", namespace, "-f", "-",
                             "--kube-version", KUBE_VERSION, "--api-versions", "monitoring.coreos.com/v1"],
                            input=yaml.safe_dump(values), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def rules_file(documents: list[dict]) -> dict:
    """The groups of lynx's own PrometheusRules (not kube-prometheus-stack's), as one Prometheus rules file."""
    return {"groups": [group for d in documents if d["kind"] == "PrometheusRule"
                       and d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "lynx"
                       for group in d["spec"]["groups"]]}


def group_rules(documents: list[dict], group: str) -> list[dict]:
    return next(g["rules"] for g in rules_file(documents)["groups"] if g["name"] == group)


def budget_alerts(documents: list[dict]) -> list[dict]:
    return group_rules(documents, BUDGET_GROUP)


def cost_records(documents: list[dict]) -> list[dict]:
    return group_rules(documents, COST_GROUP)


def alertmanager_config(documents: list[dict], default_receiver: dict) -> dict:
    """An Alertmanager configuration with the chart's AlertmanagerConfig merged in as the Prometheus operator
    does; ``default_receiver`` is the root route's (the cluster's own). Secret references become placeholders."""
    config = next(d for d in documents if d["kind"] == "AlertmanagerConfig")
    prefix = f"{config['metadata']['namespace']}/{config['metadata']['name']}/"
    sub_route = route(config["spec"]["route"], prefix)
    sub_route["matchers"].insert(0, f'namespace="{config["metadata"]["namespace"]}"')
    sub_route["continue"] = True
    return {
        "route": {"receiver": default_receiver["name"], "routes": [sub_route]},
        "receivers": [default_receiver, *(receiver(r, prefix) for r in config["spec"]["receivers"])],
    }


def route(spec: dict, prefix: str) -> dict:
    converted = {ROUTE_FIELDS[k]: v for k, v in spec.items() if k in ROUTE_FIELDS}
    if "receiver" in converted:
        converted["receiver"] = prefix + converted["receiver"]
    converted["matchers"] = [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in spec.get("matchers", [])]
    if "routes" in spec:
        converted["routes"] = [route(child, prefix) for child in spec["routes"]]
    return converted


def receiver(spec: dict, prefix: str) -> dict:
    converted = {"name": prefix + spec["name"]}
    for kind, name in RECEIVER_KINDS.items():
        if kind in spec:
            converted[name] = [{snake_case(k): field_value(k, v) for k, v in entry.items()} for entry in spec[kind]]
    return converted


def field_value(field: str, value):
    """A field's value as Alertmanager reads it: headers, a list of key/value pairs in the CRD, are a map there."""
    if field == "headers":
        return {header["key"]: header["value"] for header in value}
    return placeholder(field, value)


def snake_case(field: str) -> str:
    """The CRD's camelCase as Alertmanager's snake_case; an acronym is one word (requireTLS: require_tls)."""
    return {"urlSecret": "url"}.get(field) or re.sub(r"(?<=[a-z0-9])([A-Z]+)", r"_\1", field).lower()


def placeholder(field: str, value):
    """A Secret reference stands for its value: a URL for URL fields, a string otherwise."""
    if not isinstance(value, dict):
        return value
    reference = f"{value['name']}/{value['key']}"
    return f"https://secret.invalid/{reference}" if field in ("apiURL", "urlSecret") else reference


def write_rules(documents: list[dict], directory: Path) -> Path:
    path = directory / "lynx-rules.yml"
    path.write_text(yaml.safe_dump(rules_file(documents), sort_keys=False, width=1000))
    return path
