"""Settings shared by every service; each service extends them with its own prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    """Where models and indexes are built: outside the repository, reused across runs."""
    return Path.home() / ".cache" / "lynx"


def work_dir(tool: str) -> Path:
    """Where a command's outputs go when it is given no path (`lynx load`'s report, `lynx cpqu`'s table): outside the
    checkout, whose tracked files change only when a path is given."""
    return default_cache_dir() / "work" / tool


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
        default=15.0, ge=0, description="On SIGTERM, how long open requests (streams included) may run on; those "
        "still open near the end are ended cleanly (lynx.service.shutdown). With the final scrape wait and a few seconds to "
        "close, it must fit in what stops the process: `lynx down` waits 45 s, a pod its terminationGracePeriodSeconds "
        "minus its preStop sleep (the chart derives this setting from them).")
    final_scrape_wait_seconds: float = Field(
        default=20.0, ge=0, description="On SIGTERM, once open requests are done: how long to wait for Prometheus "
        "to scrape /metrics once more, so that it reads the last requests' counters; what the drain left of "
        "shutdown_grace_seconds is added (a Prometheus that is restarting may miss a scrape or two). Not waited for "
        "by a process Prometheus never scraped.")
    faults_enabled: bool = Field(
        default=False, description="Chaos testing only: serve PUT /admin/faults to inject latency and errors.")
