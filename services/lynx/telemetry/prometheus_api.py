"""Prometheus' HTTP API (``/api/v1/...``), the one client every reader of Prometheus uses: the budget controller,
chaos, the CpQU report, the soak benchmark and the tests.

Every failure is one exception, ``PrometheusError``, whose ``reason`` says which kind: ``Unreachable`` (no answer in
time), ``HttpError`` (an answer other than 200) or ``BadAnswer`` (no JSON, not a success, another result type than
asked for, or warnings and infos: Prometheus 3 annotates a query it answered doubtfully, a rate over what is not a
counter or a histogram quantile over unsorted buckets, and a doubtful figure is no figure). Each call is limited to
the ``timeout_seconds`` the client was built with.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

import httpx

FailureReason = Literal["Unreachable", "HttpError", "BadAnswer"]
ResultType = Literal["vector", "matrix"]
DEFAULT_TIMEOUT_SECONDS = 10.0


class PrometheusError(Exception):
    """Prometheus could not be read. ``str()`` is "Reason: what happened"; the parts are ``reason`` and ``detail``."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: FailureReason = reason
        self.detail = detail


def label_value(value: str) -> str:
    """``value`` as a PromQL string literal, for a label matcher (``tenant=<this>``).

    json.dumps escapes quotes, backslashes and control characters the way a PromQL (Go) string literal reads them.
    """
    return json.dumps(value, ensure_ascii=False)


def unix_time(moment: datetime | float) -> str:
    """A time parameter of the API: unix seconds to the millisecond (Prometheus' resolution)."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else float(moment)
    return f"{seconds:.3f}"


def query_link(url: str, expr: str) -> str:
    """The address of ``expr``'s instant query, for a person to open (Prometheus' API answers it as JSON)."""
    return str(httpx.URL(f"{url.rstrip('/')}/api/v1/query", params={"query": expr}))


def answer_data(url: str, what: str, response: httpx.Response) -> object:
    """The ``data`` of a successful, unannotated answer to ``what`` (a query or an endpoint), else PrometheusError."""
    if response.status_code != 200:
        raise PrometheusError("HttpError", f"Prometheus at {url} answered HTTP {response.status_code} to {what}: "
                                           f"{response.text[:300]}")
    try:
        body = response.json()
    except ValueError:
        raise PrometheusError("BadAnswer", f"Prometheus at {url} answered {what} with no JSON: "
                                           f"{response.text[:200]!r}") from None
    if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
        raise PrometheusError("BadAnswer", f"Prometheus at {url} answered {str(body)[:300]} to {what}")
    notes = [*(body.get("warnings") or []), *(body.get("infos") or [])]
    if notes:
        raise PrometheusError("BadAnswer", f"Prometheus at {url} answered {what} doubtfully: {'; '.join(notes)}")
    return body["data"]


def result_of(url: str, expr: str, data: object, result_type: ResultType) -> list:
    """The ``result`` of a query's data, which must be of ``result_type``."""
    if not isinstance(data, dict) or data.get("resultType") != result_type or not isinstance(data.get("result"), list):
        raise PrometheusError("BadAnswer", f"Prometheus at {url} answered {str(data)[:300]} to {expr}, "
                                           f"not a {result_type}")
    return data["result"]


class PrometheusClient:
    """One Prometheus server's API. Give it an ``httpx.Client`` to share connections; it closes only its own."""

    def __init__(self, url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._own_http = http is None
        self.http = http if http is not None else httpx.Client()

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, str] | None = None, what: str | None = None) -> object:
        """The data of ``GET /api/v1/<path>``; ``what`` names the request in errors (the query, by default the path)."""
        try:
            response = self.http.get(f"{self.url}/api/v1/{path}", params=params, timeout=self.timeout_seconds)
        except httpx.HTTPError as error:
            raise PrometheusError("Unreachable", f"Prometheus at {self.url} did not answer "
                                                 f"({type(error).__name__}: {error})") from error
        return answer_data(self.url, what or path, response)

    def _instant(self, expr: str, at: datetime | float | None, result_type: ResultType) -> list:
        """An instant query's result, evaluated at ``at`` (Prometheus' now when None)."""
        params = {"query": expr} if at is None else {"query": expr, "time": unix_time(at)}
        return result_of(self.url, expr, self.get("query", params, expr), result_type)

    def query(self, expr: str, at: datetime | float | None = None) -> list[dict]:
        """The instant vector of ``expr``: one ``{"metric", "value": [time, "number"]}`` per series."""
        return self._instant(expr, at, "vector")

    def samples(self, selector: str, at: datetime | float) -> list[dict]:
        """The raw samples a range selector (``name{...}[60s]``) holds at ``at``, unaligned and not extrapolated:
        one ``{"metric", "values": [[time, "number"], ...]}`` per series."""
        return self._instant(selector, at, "matrix")

    def query_range(self, expr: str, start: datetime | float, end: datetime | float, step_seconds: float
                    ) -> list[dict]:
        """``expr`` evaluated every ``step_seconds`` from ``start`` to ``end``, as a dashboard's graph asks for it."""
        params = {"query": expr, "start": unix_time(start), "end": unix_time(end), "step": f"{step_seconds:g}"}
        return result_of(self.url, expr, self.get("query_range", params, expr), "matrix")

    def exemplars(self, expr: str, start: datetime | float, end: datetime | float) -> list[dict]:
        """The exemplars of the series ``expr`` selects between ``start`` and ``end``: per series
        ``{"seriesLabels", "exemplars": [{"labels", "value", "timestamp"}, ...]}``."""
        data = self.get("query_exemplars", {"query": expr, "start": unix_time(start), "end": unix_time(end)}, expr)
        if not isinstance(data, list):
            raise PrometheusError("BadAnswer", f"Prometheus at {self.url} answered {str(data)[:300]} to the "
                                               f"exemplars of {expr}, not a list")
        return data

    def active_targets(self) -> list[dict]:
        """The scrape targets Prometheus is scraping, each with its ``labels``, ``health`` and ``lastScrape``."""
        data = self.get("targets", {"state": "active"})
        if not isinstance(data, dict) or not isinstance(data.get("activeTargets"), list):
            raise PrometheusError("BadAnswer", f"Prometheus at {self.url} answered {str(data)[:300]} to targets")
        return data["activeTargets"]

    def status(self, page: Literal["buildinfo", "runtimeinfo", "config", "flags", "tsdb"]) -> dict:
        """One of Prometheus' status pages (``/api/v1/status/<page>``)."""
        data = self.get(f"status/{page}")
        if not isinstance(data, dict):
            raise PrometheusError("BadAnswer", f"Prometheus at {self.url} answered {str(data)[:300]} to status/{page}")
        return data
