"""Errors in the OpenAI shape, ``{"error": {"message", "type", "param", "code"}}``, plus a ``lynx`` object
with the trace id and request id that find the request in traces and logs (and its cost, when charged)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import trace

from lynx.contracts.errors import ErrorBody, ErrorCorrelation, ErrorDetail
from lynx.telemetry.request_id import request_id_var
from lynx.telemetry.tracing import trace_ids

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
INTERNAL_ERROR_MESSAGE = "Internal error; the request id in X-Request-ID finds it in the logs."


@dataclass
class LynxError(Exception):
    """An error a client can act on; ``message`` says what to fix."""

    status: int
    message: str
    code: str
    type: str = "invalid_request_error"
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cost: dict | None = None  # set once the failed request has been charged

    def body(self) -> dict:
        return error_body(self.message, self.code, self.type, self.param, self.cost)


def error_body(message: str, code: str, type_: str = "invalid_request_error", param: str | None = None,
               cost: dict | None = None) -> dict:
    """The body, correlated with the current span and request id."""
    trace_id, _ = trace_ids(trace.get_current_span())
    body = ErrorBody(error=ErrorDetail(message=message, type=type_, param=param, code=code),
                     lynx=ErrorCorrelation(trace_id=trace_id, request_id=request_id_var.get(), cost=cost))
    return body.model_dump(exclude={"lynx": {"cost"}} if cost is None else None)


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """A readable sentence from pydantic's errors, plus the offending parameter's name.

    A value that matched no member of a union gets one error per member, the plain type mismatch first ("should be a
    valid string"): the sentence tells the one that says more, without the member's name in the parameter."""
    first = next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])
    location = [str(part) for part in first.get("loc", ()) if part != "body" and "[" not in str(part)]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')}).", None
    message = first.get("msg", "invalid value")
    more = f" ({len(errors) - 1} more problem(s) in the body)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param
