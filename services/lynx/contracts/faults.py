"""Fault injection (chaos testing): refused unless the service runs with faults enabled."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FaultPlan(BaseModel):
    latency_seconds: float = Field(default=0.0, ge=0, le=60, description="Added before each API request.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of API requests answered with 500.")
    step_error_rate: float = Field(default=0.0, ge=0, le=1,
                                   description="Decoder only: share of engine steps that raise.")
