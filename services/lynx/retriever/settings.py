from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lynx.settings import ServiceSettings, default_cache_dir


class RetrieverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_RETRIEVER_", extra="ignore", frozen=True)

    port: int = Field(default=8082, ge=1, le=65535)
    embedder_dir: Path = Field(default=default_cache_dir() / "models" / "int4" / "embedder")
    index_dir: Path = Field(default=default_cache_dir() / "index" / "default")
    max_top_k: int = Field(default=20, ge=1, le=100)
    threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads for the embedder.")
