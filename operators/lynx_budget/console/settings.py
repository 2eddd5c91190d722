"""The console's settings, from LYNX_CONSOLE_* (the chart sets them from `console.*` values)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lynx.service.settings import default_cache_dir
from lynx.telemetry.tracestore import DEFAULT_TRACE_STORE_URL, TraceStoreKind


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_CONSOLE_", extra="ignore", frozen=True)

    enabled: bool = Field(default=True, description="Serve the console under /console.")
    admin_token_file: Path = Field(
        default=default_cache_dir() / "console-admin-token",
        description="The admin's sign-in token: made private and random by the first process that needs it (`lynx up` "
                    "prints it); in Kubernetes the chart's Secret <fullname>-console-admin, mounted.")
    tenants_file: Path = Field(
        default=default_cache_dir() / "tenants.json",
        description="The gateway's tenants file (ids and key hashes): a tenant owner signs in with its API key, "
                    "checked as the gateway checks it.")
    trace_store_url: str = Field(default=DEFAULT_TRACE_STORE_URL, pattern=r"^https?://.+",
                                 description="The trace store's query API: Jaeger's query port (16686), or Tempo's "
                                             "HTTP port (3200) with trace_store_kind tempo.")
    trace_store_kind: TraceStoreKind = Field(default="jaeger", description="jaeger (lynx's own) or tempo.")
    secure_cookies: bool = Field(
        default=False, description="Mark the session cookie Secure: set it when the console is reached over TLS.")
    session_hours: float = Field(default=8.0, gt=0, le=168, description="How long a sign-in lasts.")
    failed_signins_allowed: int = Field(
        default=5, ge=1, description="Failed sign-ins one client may make within failed_signin_window_seconds; the "
                                     "next ones are refused 429 until the oldest leaves the window.")
    failed_signin_window_seconds: float = Field(default=300.0, gt=0)
    recent_hours: float = Field(default=24.0, gt=0, le=24 * 7,
                                description="How far back the failure and recent-request lists look in the trace store.")
    recent_traces_limit: int = Field(default=500, ge=10, le=5000,
                                     description="The most traces one list reads from the trace store.")
