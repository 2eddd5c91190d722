from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lynx.service.settings import ServiceSettings, default_cache_dir


class RetrieverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_RETRIEVER_", extra="ignore", frozen=True)

    port: int = Field(default=8082, ge=1, le=65535)
    embedder_dir: Path = Field(default=default_cache_dir() / "models" / "int4" / "embedder")
    index_dir: Path = Field(default=default_cache_dir() / "index" / "default")
    max_top_k: int = Field(default=20, ge=1, le=100)
    threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads for the embedder.")
    # One by default: each worker needs a core of its own, or `seconds` (wall time in the worker) charges a
    # request for the time it shared a core. Raise it with the CPU limit: on 2 idle
    # cores 2 workers served 1.6x the queries of 1 (docs/BENCHMARKS.md).
    workers: int = Field(default=1, ge=1, le=64, description=(
        "Queries embedded and searched at once, each in a worker thread off the event loop (each using "
        "`threads` onnxruntime threads); more wait for a free worker."))
