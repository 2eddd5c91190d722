from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lynx.telemetry.tracestore import DEFAULT_TRACE_STORE_URL, TraceStoreKind
from lynx.service.settings import ServiceSettings


class AuditorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_AUDITOR_", extra="ignore", frozen=True)

    port: int = Field(default=8084, ge=1, le=65535)
    trace_store_url: str = Field(
        default=DEFAULT_TRACE_STORE_URL, description="The trace store's query API: Jaeger's query port (16686), or "
                                                      "Tempo's HTTP port (3200) with trace_store_kind tempo.")
    trace_store_kind: TraceStoreKind = Field(
        default="jaeger", description="jaeger (lynx's own trace store, its API v3) or tempo (one you run yourself).")
    interval_seconds: float = Field(default=15.0, gt=0, description="Time between audits.")
    lookback_seconds: float = Field(default=300.0, gt=0, description="Traces this recent are audited and counted.")
    request_deadline_seconds: float = Field(
        default=60.0, gt=0, description="The longest request deadline of the gateways audited "
                                        "(LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS): no span of a request starts later.")
    export_delay_seconds: float = Field(
        default=30.0, ge=0, description="How long an ended span may take to become readable in the trace store: the "
        "services' batch delay (OTEL_BSP_SCHEDULE_DELAY, 5 s), the collector's batch (2 s), a retry or two (5 s "
        "apart) and the store's own indexing. Until a trace is request_deadline_seconds + export_delay_seconds old, "
        "a missing parent may still arrive: it is read again at every audit and counted as orphaned only after.")
    max_traces_per_run: int = Field(default=500, ge=1)

    @property
    def complete_after_seconds(self) -> float:
        """A trace this old can no longer complete: a parent still missing then is missing for good."""
        return self.request_deadline_seconds + self.export_delay_seconds

    @model_validator(mode="after")
    def lookback_covers_completion(self) -> AuditorSettings:
        if self.lookback_seconds <= self.complete_after_seconds:
            raise ValueError(f"lookback_seconds ({self.lookback_seconds:g}) must exceed request_deadline_seconds + "
                             f"export_delay_seconds ({self.complete_after_seconds:g}): a trace leaving the window "
                             "before it can no longer complete would never get a verdict")
        return self
