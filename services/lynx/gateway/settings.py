from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lynx.contracts.limits import MAX_CONTEXT_TOKENS, MAX_DEADLINE_SECONDS
from lynx.gateway.decoders import DecoderAddresses, parse_addresses
from lynx.service.settings import ServiceSettings, default_cache_dir


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(default=8080, ge=1, le=65535)
    tokenizer_url: str = "http://127.0.0.1:8081"
    retriever_url: str = "http://127.0.0.1:8082"
    decoder_url: str = Field(default="http://127.0.0.1:8083", description="The one decoder instance, when "
                             "LYNX_GATEWAY_DECODER_URLS is unset.")
    decoder_urls: str = Field(
        default="", description="The decoder instances, comma-separated http://host:port, or one "
        "dns+http://name:port whose A/AAAA records are the instances (a headless Service); each request goes to the "
        "ready one with the fewest requests in flight (lynx.gateway.decoders). Overrides LYNX_GATEWAY_DECODER_URL.")
    decoder_probe_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often the decoder addresses are resolved again and each instance "
        "asked whether it is ready and how many sequences it holds.")
    tenants_file: Path = Field(default=default_cache_dir() / "tenants.json",
                               description="JSON file of tenants and the SHA-256 of their API keys; re-read on change.")
    model_name: str = Field(default="SmolLM2-135M-Instruct", description="The model id clients ask for.")
    max_tokens_limit: int = Field(default=1024, ge=1, le=MAX_CONTEXT_TOKENS,
                                  description="Largest max_tokens a request may ask for.")
    request_deadline_seconds: float = Field(default=60.0, gt=0, le=MAX_DEADLINE_SECONDS,
                                            description="Wall-clock budget of one request.")
    retrieval_top_k: int = Field(default=3, ge=0, le=20, description="Passages added to chat prompts (0: none).")
    retrieval_min_score: float = Field(default=0.3, ge=-1, le=1,
                                       description="Passages scoring below this cosine similarity are left out.")
    stage_budgets_seconds: dict[str, float] = Field(
        default={"retrieve": 0.1, "tokenize": 0.05, "queue": 0.5, "prefill": 2.0, "decode": 10.0},
        description="Latency budget of each stage, shown against the measured p95 on the capstone dashboard.")
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
    budgets_file: Path = Field(
        default=default_cache_dir() / "budget-decisions.json",
        description="The budget decisions the controller publishes (BudgetDecisions JSON); re-read on change. "
                    "Missing: no budgets, every tenant served.")
    budget_controller_url: str | None = Field(
        default=None, pattern=r"^https?://.+",
        description="The budget controller that grants this gateway spend leases (lynx.gateway.leases): a budgeted "
                    "tenant's request is admitted only within this gateway's lease, so its cap holds across "
                    "gateways. Unset: each gateway enforces the published decisions alone (one gateway only).")
    prometheus_url: str | None = Field(
        default=None, pattern=r"^https?://.+",
        description="The Prometheus that scrapes the gateways' cost counter, which GET /v1/lynx/usage reads a "
                    "tenant's spend from (as the budget controller does). Unset: that endpoint answers 503.")
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0, le=60,
                                              description="One Prometheus query's time limit, for /v1/lynx/usage.")
    lease_token_file: Path = Field(
        default=default_cache_dir() / "lease-token",
        description="The token the gateways and the budget controller share (a mounted Secret in Kubernetes).")
    lease_chunk_requests: int = Field(
        default=8, ge=1, le=1000, description="A renewal asks for this many of the largest recent worst cases...")
    lease_most_of_cap: float = Field(
        default=0.1, gt=0, le=1, description="...but for no more than this share of the tenant's cap beyond what the "
                                             "waiting request needs, so other gateways find budget free.")
    lease_timeout_seconds: float = Field(default=2.0, gt=0, le=60, description="One lease renewal's time limit.")
    prefill_seconds_per_token: float = Field(
        default=1 / 650, gt=0,
        description="Decoder seconds one prompt token costs to prefill, alone (measured ~1/650 s on the int4 "
                    "model, 2 threads): with the decoder's LYNX_DECODER_STEP_* coefficients, the basis of a "
                    "request's worst-case cost, which is reserved against its tenant's budget.")
    budget_estimate_margin: float = Field(
        default=3.0, ge=1,
        description="Multiplies the decoder seconds of the worst-case estimate: slack for a decoder slower than "
                    "its measured coefficients (CPU contention, a short prompt's share of joining a batch). "
                    "docs/BENCHMARKS.md measures how far real costs came from their reservation.")
    cheaper_decoder_url: str | None = Field(
        default=None, description="A cheaper decoder configuration, for tenants in Warning whose budget asks for "
                                  "it (cheaper_near_cap): its instances, written as LYNX_GATEWAY_DECODER_URLS. "
                                  "Unset: none deployed, no routing.")
    cheaper_model_name: str | None = Field(default=None, description="The model the cheaper decoder serves.")
    cheaper_decoder_per_hour: float | None = Field(
        default=None, ge=0, description="The cheaper decoder's rate (EUR/h), which its requests are charged at.")

    @model_validator(mode="after")
    def decoder_addresses_valid(self) -> GatewaySettings:
        self.decoder_addresses()
        self.cheaper_decoder_addresses()
        return self

    def decoder_addresses(self) -> DecoderAddresses:
        return parse_addresses((self.decoder_urls or self.decoder_url).split(","))

    def cheaper_decoder_addresses(self) -> DecoderAddresses | None:
        return None if self.cheaper_decoder_url is None else parse_addresses(self.cheaper_decoder_url.split(","))

    @model_validator(mode="after")
    def cheaper_decoder_complete(self) -> GatewaySettings:
        given = [self.cheaper_decoder_url, self.cheaper_model_name, self.cheaper_decoder_per_hour]
        if any(v is not None for v in given) and any(v is None for v in given):
            raise ValueError("LYNX_GATEWAY_CHEAPER_DECODER_URL, LYNX_GATEWAY_CHEAPER_MODEL_NAME and "
                             "LYNX_GATEWAY_CHEAPER_DECODER_PER_HOUR go together: set all three or none")
        return self
