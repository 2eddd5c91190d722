"""What a command says when it refuses: one sentence that says what to fix (for its options, one that names each
option and what it takes, in place of pydantic's report with its error types and links to its site)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

# pydantic's messages start with what was checked ("Input should be greater than 0"): the option takes its place.
SUBJECTS = ("Input ", "String ", "Value ", "List ")


class CommandRefused(Exception):
    """What was asked cannot be done; the message, one sentence, says what to fix. `lynx` prints it, prefixed with
    the command, in place of a traceback."""


def shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def option_problem(error: Mapping, options: Mapping[str, str]) -> str:
    """One of pydantic's errors as a clause: "--amount should be greater than 0 (not -1)"."""
    location = [str(part) for part in error.get("loc", ())]
    name = options.get(location[0], ".".join(location)) if location else "the value"
    message = str(error["msg"])
    if error.get("type") == "missing":
        return f"{name} is required"
    if message.startswith("Value error, "):  # a validator's own words
        return f"{name}: {message.removeprefix('Value error, ')}"
    if error.get("type") == "string_pattern_mismatch":  # the pattern itself would say nothing to most readers
        return f"{name} does not take {shown(error['input'])}"
    subject = next((s for s in SUBJECTS if message.startswith(s)), None)
    said = f"{name} {message.removeprefix(subject)}" if subject else f"{name}: {message}"
    return f"{said} (not {shown(error['input'])})" if "input" in error else said


def refused_options(error: ValueError, options: Mapping[str, str]) -> str:
    """``error`` as one sentence naming the command's options (``options``: a model's field -> its option; a field
    with none is named by its path, as a file would hold it); a plain ValueError's message is one already."""
    if not isinstance(error, ValidationError):
        return str(error)
    problems = [option_problem(e, options) for e in error.errors()]
    return ", ".join(problems[:-1]) + (" and " if len(problems) > 1 else "") + problems[-1]
