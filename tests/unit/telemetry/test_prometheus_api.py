"""The Prometheus client's pure parts: PromQL string literals, time parameters, and how an answer maps to its data
or to a PrometheusError (the calls themselves: tests/integration/test_prometheus_api.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from lynx.telemetry.prometheus_api import (
    PrometheusError,
    answer_data,
    label_value,
    query_link,
    result_of,
    unix_time,
)

URL = "http://prometheus:9090"


def answer(status: int, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content)


@pytest.mark.parametrize(("value", "literal"), [
    ("acme", '"acme"'),
    ('a"b', '"a\\"b"'),
    ("back\\slash", '"back\\\\slash"'),
    ("new\nline", '"new\\nline"'),
    ("zoë", '"zoë"'),  # as it is: PromQL strings are UTF-8
])
def test_a_label_value_is_a_promql_string_literal(value, literal):
    assert label_value(value) == literal


def test_a_query_link_is_the_instant_query_with_its_expression_encoded():
    assert query_link(f"{URL}/", "lynx_tenant_cost_eur_total") == f"{URL}/api/v1/query?query=lynx_tenant_cost_eur_total"
    assert query_link(URL, 'sum(x{tenant="a b"})') == f"{URL}/api/v1/query?query=sum%28x%7Btenant%3D%22a+b%22%7D%29"


def test_times_are_unix_seconds_to_the_millisecond():
    assert unix_time(datetime(2026, 6, 10, 12, 0, 0, 123456, tzinfo=UTC)) == "1781092800.123"
    assert unix_time(1781092800) == "1781092800.000"


def test_a_successful_answer_gives_its_data():
    data = {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2"]}]}
    assert answer_data(URL, "up", answer(200, {"status": "success", "data": data})) == data
    assert result_of(URL, "up", data, "vector") == data["result"]


@pytest.mark.parametrize(("status", "body", "reason", "words"), [
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "HttpError", "HTTP 400 to up: "),
    (503, b"Service Unavailable", "HttpError", "HTTP 503"),
    (200, b"<html>a proxy's login page</html>", "BadAnswer", "with no JSON"),
    (200, ["not", "an", "object"], "BadAnswer", "['not', 'an', 'object'] to up"),
    (200, {"status": "error", "data": {}}, "BadAnswer", "to up"),
    (200, {"status": "success"}, "BadAnswer", "to up"),
    (200, {"status": "success", "data": {}, "warnings": ["PromQL warning: bucket label"]}, "BadAnswer",
     "doubtfully: PromQL warning: bucket label"),
    (200, {"status": "success", "data": {}, "infos": ["PromQL info: metric might not be a counter"]}, "BadAnswer",
     "doubtfully: PromQL info: metric might not be a counter"),
])
def test_an_unusable_answer_is_a_prometheus_error(status, body, reason, words):
    with pytest.raises(PrometheusError) as raised:
        answer_data(URL, "up", answer(status, body))
    assert raised.value.reason == reason and words in raised.value.detail
    assert str(raised.value) == f"{reason}: {raised.value.detail}" and URL in raised.value.detail


@pytest.mark.parametrize("data", [
    {"resultType": "vector", "result": []},  # a vector where a matrix was asked for
    {"resultType": "matrix", "result": {}},
    {"resultType": "matrix"},
    [],
])
def test_a_result_of_another_type_is_a_bad_answer(data):
    with pytest.raises(PrometheusError, match=r"^BadAnswer: .* to x\[1m\], not a matrix$"):
        result_of(URL, "x[1m]", data, "matrix")
