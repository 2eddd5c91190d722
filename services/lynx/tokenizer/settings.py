from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lynx.service.settings import ServiceSettings, default_cache_dir


class TokenizerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_TOKENIZER_", extra="ignore", frozen=True)

    port: int = Field(default=8081, ge=1, le=65535)
    model_dir: Path = Field(default=default_cache_dir() / "models" / "int4" / "decoder",
                            description="Folder with the decoder's tokenizer.json and chat_template.jinja.")
    max_messages: int = Field(default=64, ge=1)
    # One by default: each worker needs a core of its own, or `seconds` (wall time in the worker) charges a
    # request for the time it shared a core.
    workers: int = Field(default=1, ge=1, le=64, description=(
        "Requests encoded, templated or decoded at once, each in a worker thread off the event loop; "
        "more wait for a free worker."))
