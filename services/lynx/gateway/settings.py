from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lynx.settings import ServiceSettings, default_cache_dir


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(default=8080, ge=1, le=65535)
    tokenizer_url: str = "http://127.0.0.1:8081"
    retriever_url: str = "http://127.0.0.1:8082"
    decoder_url: str = "http://127.0.0.1:8083"
    tenants_file: Path = Field(default=default_cache_dir() / "tenants.json",
                               description="JSON file of tenants and the SHA-256 of their API keys; re-read on change.")
    model_name: str = Field(default="SmolLM2-135M-Instruct", description="The model id clients ask for.")
    max_tokens_limit: int = Field(default=1024, ge=1, description="Largest max_tokens a request may ask for.")
    request_deadline_seconds: float = Field(default=60.0, gt=0, description="Wall-clock budget of one request.")
    retrieval_top_k: int = Field(default=3, ge=0, le=20, description="Passages added to chat prompts (0: none).")
    retrieval_min_score: float = Field(default=0.3, ge=-1, le=1,
                                       description="Passages scoring below this cosine similarity are left out.")
    stage_budgets_seconds: dict[str, float] = Field(
        default={"retrieve": 0.1, "tokenize": 0.05, "queue": 0.5, "prefill": 2.0, "decode": 10.0},
        description="Latency budget of each stage, shown against the measured p95 on the capstone dashboard.")
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
