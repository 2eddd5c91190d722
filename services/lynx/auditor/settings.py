from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lynx.settings import ServiceSettings


class AuditorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_AUDITOR_", extra="ignore", frozen=True)

    port: int = Field(default=8084, ge=1, le=65535)
    tempo_url: str = "http://127.0.0.1:3200"
    interval_seconds: float = Field(default=15.0, gt=0, description="Time between audits.")
    lookback_seconds: float = Field(default=300.0, gt=0, description="Traces this recent are audited and counted.")
    settle_seconds: float = Field(
        default=20.0, ge=0, description="Traces younger than this are left for the next run: their parent spans "
                                        "(which end last) may still be on their way to Tempo.")
    max_traces_per_run: int = Field(default=500, ge=1)
