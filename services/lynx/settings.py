"""Settings shared by every service; each service extends them with its own prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    """Where models and indexes are built: outside the repository, reused across runs."""
    return Path.home() / ".cache" / "lynx"


class ServiceSettings(BaseSettings):
    """What every service process needs: where to listen and how to log."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_content: bool = Field(
        default=False,
        description="Debug only: allow prompt and completion text in logs and spans.",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body accepted.")
    shutdown_grace_seconds: float = Field(
        default=25.0, ge=0, description="On SIGTERM, how long open requests (streams included) may run on before "
        "they are cancelled; keep it below the pod's terminationGracePeriodSeconds.")
    faults_enabled: bool = Field(
        default=False, description="Chaos testing only: serve PUT /admin/faults to inject latency and errors.")
