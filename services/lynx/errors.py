"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LynxError(Exception):
    """An error a client can act on; ``message`` says what to fix."""

    status: int
    message: str
    code: str
    type: str = "invalid_request_error"
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict:
        return error_body(self.message, self.code, self.type, self.param)


def error_body(message: str, code: str, type_: str = "invalid_request_error", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """A readable sentence from pydantic's errors, plus the offending parameter's name."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')}).", None
    message = first.get("msg", "invalid value")
    more = f" ({len(errors) - 1} more problem(s) in the body)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param
