"""``POST /v1/leases``: a gateway's ``LeaseRequest`` in, the ``LeaseGrant`` out (``lease_desk.LeaseDesk`` decides).

The token is checked before the body is read, so a caller without it learns nothing about the body it sent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from lynx.contracts.leases import LeaseRequest
from lynx.service.errors import LynxError
from lynx_budget import gauges
from lynx_budget.lease_desk import INVALID_LEASE_TOKEN, LEDGER_UNWRITABLE, NO_BUDGET, LeaseDesk

# A request answered without a grant, by the error's code; any other refusal counts as "invalid".
OUTCOME_OF_ERROR = {INVALID_LEASE_TOKEN: "unauthorized", NO_BUDGET: "no_budget", LEDGER_UNWRITABLE: "persist_failed"}


@dataclass
class Answered:
    outcome: str = "invalid"


@contextlib.contextmanager
def counted() -> Iterator[Answered]:
    """Counts one lease request by its outcome (the block sets it, or the error it raises decides) and times it."""
    started, answered = time.perf_counter(), Answered()
    try:
        yield answered
    except LynxError as error:
        answered.outcome = OUTCOME_OF_ERROR.get(error.code, answered.outcome)
        raise
    finally:
        gauges.count_lease_request(answered.outcome, time.perf_counter() - started)


def parsed(body: bytes) -> LeaseRequest:
    try:
        return LeaseRequest.model_validate_json(body)
    except ValidationError as error:  # answered as any other invalid body (lynx.service.app)
        raise RequestValidationError(error.errors(include_url=False)) from None


def leases_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/leases")
    async def lease(request: Request) -> dict:
        desk: LeaseDesk = request.app.state.desk
        with counted() as answered:
            desk.authenticate(request.headers.get("authorization"))
            grant = await desk.answer(parsed(await request.body()))
            answered.outcome = grant.outcome
        return grant.model_dump(mode="json")

    return router
