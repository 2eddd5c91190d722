"""The JSON log line (lynx.telemetry.logs): every event has its own id, and the start time of the request it belongs
to, whichever service logs it."""

import json
import logging
import re

from lynx.telemetry.logs import JsonFormatter, utc_timestamp
from lynx.telemetry.request_id import request_id_var, request_started_var

FORMATTER = JsonFormatter("lynx-test")


def line(message: str, **fields) -> dict:
    record = logging.LogRecord("lynx.test", logging.INFO, __file__, 1, message, None, None)
    record.fields = fields
    return json.loads(FORMATTER.format(record))


def test_every_event_has_an_id_of_its_own():
    ids = {line("request_started")["event_id"] for _ in range(1000)}
    assert len(ids) == 1000 and all(len(event_id) == 32 for event_id in ids)


def test_an_event_within_a_request_carries_the_request_s_start_time():
    started = 1_767_225_600.25  # 2026-01-01T00:00:00.250Z
    request_token, started_token = request_id_var.set("r1"), request_started_var.set(started)
    try:
        first, second = line("request_started", tenant="t"), line("request_finished", tenant="t")
    finally:
        request_id_var.reset(request_token)
        request_started_var.reset(started_token)
    assert first["request_started_at"] == second["request_started_at"] == "2026-01-01T00:00:00.250Z"
    assert first["request_id"] == second["request_id"] == "r1" and first["event_id"] != second["event_id"]
    assert first["tenant"] == "t" and first["event"] == "request_started"


def test_an_event_outside_any_request_says_so():
    assert line("service_started")["request_started_at"] == "" and line("service_started")["request_id"] == ""


def test_timestamps_are_utc_to_the_millisecond():
    assert utc_timestamp(0.999) == "1970-01-01T00:00:00.999Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line("tick")["ts"])
