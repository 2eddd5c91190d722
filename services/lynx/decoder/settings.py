from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lynx.contracts.limits import MAX_CONTEXT_TOKENS
from lynx.accounting.shares import StepCostSettings
from lynx.service.settings import ServiceSettings, default_cache_dir

UNROUTABLE_HOSTS = ("0.0.0.0", "::", "")


class DecoderSettings(ServiceSettings, StepCostSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_DECODER_", extra="ignore", frozen=True)

    port: int = Field(default=8083, ge=1, le=65535)
    model_dir: Path = Field(default=default_cache_dir() / "models" / "int4" / "decoder")
    model_name: str = "SmolLM2-135M-Instruct"
    kv_slots: int = Field(default=8, ge=1, le=256, description="Sequences decoded at once (KV-cache slots).")
    queue_capacity: int = Field(default=32, ge=0, le=10_000, description="Requests that may wait for a slot.")
    max_context: int = Field(default=2048, ge=16, le=MAX_CONTEXT_TOKENS, description="Prompt + completion tokens per slot.")
    threads: int = Field(default=2, ge=1, le=256, description="onnxruntime intra-op threads.")
    spin_wait: bool = Field(default=True, description="Let onnxruntime threads spin between steps.")
    warm_up: bool = Field(default=True, description="Run each kind of model call once before reporting ready, so "
                          "the first requests do not pay for onnxruntime's first calls (about 1 s at start).")
    batching: Literal["continuous", "static"] = Field(
        default="continuous",
        description="continuous admits new sequences every step; static waits for the whole batch to finish.")
    prefill_token_budget: int = Field(
        default=128, ge=2, description="Prompt tokens prefilled per engine step, at most, before the running "
        "sequences decode their next token: short prompts are prefilled several at once, longer ones in chunks of "
        "this size, so a long prompt delays running streams by one chunk per token, not by its whole prefill.")
    retry_after_seconds: int = Field(default=1, ge=1, description="Retry-After sent when the queue is full.")
    admit_by_deadline: bool = Field(
        default=True, description="Refuse at once (503 queue_wait_exceeds_deadline) a request that would wait for a "
        "slot and could not finish before its deadline, by the measured time per sequence (lynx.decoder.admission). "
        "Off: it waits, and ends with its deadline (benchmarks compare both).")
    advertise_url: str | None = Field(
        default=None, description="How callers reach this very instance (to cancel a sequence it holds), e.g. "
        "http://$(POD_IP):8083. Default: http://host:port, or the caller's decoder URL when host is 0.0.0.0.")

    def advertised_url(self) -> str:
        """The base URL in cancel links; empty means 'relative to whatever URL reached this decoder'."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        return "" if self.host in UNROUTABLE_HOSTS else f"http://{self.host}:{self.port}"
