"""One settings object for every SMVM process.

Precedence (highest first): `SMVM_*` environment variables, then the profile file
`configs/<SMVM_PROFILE>.yaml`, then the defaults below. Every field is documented in
docs/configuration.md; the names of the environment variables are the field names upper-cased
with the `SMVM_` prefix (e.g. `runs_dir` <- `SMVM_RUNS_DIR`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("SMVM_CONFIG_DIR", REPO_ROOT / "configs"))

# Default listen/connect address of each service (the port plan).
DEFAULT_ADDRS: dict[str, str] = {
    "orchestrator": "127.0.0.1:50050",
    "ingestion": "127.0.0.1:50051",
    "personas": "127.0.0.1:50052",
    "competitors": "127.0.0.1:50053",
    "simulation": "127.0.0.1:50054",
    "analysis": "127.0.0.1:50055",
    "overwatch": "127.0.0.1:50056",
    "memory": "127.0.0.1:50058",
    "gateway": "127.0.0.1:8080",
}
SERVICES = tuple(DEFAULT_ADDRS)

PROFILES = ("dev", "test", "ci", "prod")
STATUS_CACHE_DEFAULT_SIZE = 10_000


def _profile() -> str:
    return os.environ.get("SMVM_PROFILE", "dev")


class Settings(BaseSettings):
    """Runtime configuration shared by all services, the gateway, the launcher and the CLI."""

    model_config = SettingsConfigDict(env_prefix="SMVM_", extra="ignore", frozen=True)

    profile: str = Field("dev", description="dev | test | ci | prod; selects configs/<profile>.yaml")
    runs_dir: Path = Field(Path("runs"), description="Root of runs/{project_id}/validation/{run_id}/")
    log_level: str = Field("INFO", description="Python logging level name")
    database_url: str = Field(
        "",
        description="Store database: postgresql://user:pass@host:port/db, or sqlite:////abs/path.db; "
        "empty = the embedded SQLite file smvm.db inside runs_dir",
    )

    orchestrator_addr: str = DEFAULT_ADDRS["orchestrator"]
    ingestion_addr: str = DEFAULT_ADDRS["ingestion"]
    personas_addr: str = DEFAULT_ADDRS["personas"]
    competitors_addr: str = DEFAULT_ADDRS["competitors"]
    # A single address, a comma-separated list, or a dns:/// name resolving to several replicas.
    simulation_addr: str = DEFAULT_ADDRS["simulation"]
    analysis_addr: str = DEFAULT_ADDRS["analysis"]
    overwatch_addr: str = DEFAULT_ADDRS["overwatch"]
    memory_addr: str = DEFAULT_ADDRS["memory"]
    gateway_addr: str = DEFAULT_ADDRS["gateway"]

    api_tokens: str = Field(
        "", description="Comma-separated bearer tokens the gateway accepts (dev also accepts dev-admin-token)"
    )
    tokens_file: str = Field(
        "", description="Scoped, hashed bearer tokens (YAML/JSON; `smvm token create` writes it); empty = none"
    )
    service_token: str = Field(
        "", description="The mesh's service token; when set every gRPC service requires it (or an admin token). "
        "During a rotation a comma-separated list: the first is the one this process sends, all are accepted"
    )
    service_tokens_accepted: str = Field(
        "", description="More service tokens accepted but never sent (comma-separated): the next one before a "
        "rotation, the previous one after it (docs/security.md)"
    )
    service_tokens_accepted_until: str = Field(
        "", description="ISO 8601 time ending the overlap: after it only the current service token is accepted; "
        "empty = until removed from the list"
    )
    tls_cert: str = Field("", description="PEM certificate of this process for mTLS between services; empty = plaintext")
    tls_key: str = Field("", description="PEM private key matching tls_cert")
    tls_ca: str = Field("", description="PEM CA bundle that signs every service's certificate (peers must present one)")
    tls_server_name: str = Field("", description="Name to verify in servers' certificates instead of the dialled host")
    public_base_url: str = Field("http://127.0.0.1:8080", description="Base URL the gateway is reached at")

    # The optional persona-narrative model adapter (services/personas/llm_adapter.py): off unless
    # llm_base_url and llm_model are set; its tokens are reserved and metered in overwatch's ledger.
    llm_base_url: str = Field(
        "", description="Base URL of an OpenAI-compatible API (POST {base}/chat/completions) for persona "
        "narratives, e.g. https://api.openai.com/v1; empty = off (template narratives)"
    )
    llm_model: str = Field("", description="Model name sent to the narrative adapter's provider; empty = off")
    llm_api_key: str = Field("", description="Bearer credential of the narrative provider (a secret); may be empty")
    llm_timeout_s: float = Field(20.0, gt=0, description="Deadline of one narrative call to the provider")
    llm_tokens_per_persona: int = Field(
        500, gt=0, description="Model tokens (prompt + completion) the orchestrator reserves per persona narrative"
    )
    llm_max_completion_tokens: int = Field(
        200, gt=0, description="Largest completion asked for one narrative (max_tokens of the call)"
    )
    llm_concurrency: int = Field(4, gt=0, description="Narrative calls in flight at once per personas request")

    numba_cache_dir: Path = Field(Path(".numba_cache"), description="numba's on-disk compile cache")
    grace_period_s: float = Field(10.0, description="Drain time on SIGTERM before in-flight calls are cut")
    stage_timeout_s: float = Field(60.0, description="Deadline of one stage call from the orchestrator")
    simulation_timeout_s: float = Field(600.0, description="Deadline of the simulation stage")
    report_renders: int = Field(
        1, ge=1, le=16, description="Report documents (HTML/PDF with charts) an orchestrator has rendered at once"
    )
    simulation_shards: int = Field(0, description="Shards per run for fan-out; 0 = one per resolved replica")
    max_iterations: int = Field(10_000_000, description="Largest simulation_iterations a request may ask for")
    max_utility_evaluations: int = Field(
        5_000_000_000, description="Default compute ceiling per run (utility evaluations)"
    )
    max_request_bytes: int = Field(1_048_576, description="Largest REST request body")
    fault_injection: str = Field(
        "", description="Reliability tests only: latency / UNAVAILABLE injection plan (smvm/faults.py); empty = off"
    )

    @field_validator("fault_injection")
    @classmethod
    def _valid_fault_plan(cls, value: str) -> str:
        from smvm.faults import FaultPlan

        FaultPlan.parse(value)  # ValueError names the key
        return value
    run_lease_s: float = Field(
        30.0, description="Lease of an orchestrator replica on an active run; renewed every third, adopted by another after expiry"
    )
    memory_sync_interval_s: float = Field(10.0, description="How often the memory service learns newly decided runs")
    memory_retention_interval_s: float = Field(3600.0, description="How often the memory service applies retention")
    memory_timeout_s: float = Field(
        2.0, gt=0, description="Deadline of the orchestrator's memory queries; past it a run goes on without memory grounding"
    )

    # Callbacks to TractionBuild (services/orchestrator/callbacks) and the results sync.
    webhook_secrets: str = Field(
        "", description="Comma-separated HMAC secrets signing callbacks (first is current; required in prod, else dev-webhook-secret)"
    )
    callback_allowed_hosts: str = Field(
        "", description="Comma-separated callback hosts allowed outside dev (exact, or *.example.com)"
    )
    webhook_backoff_base_s: float = Field(1.0, description="Retry backoff base: base x 1, 2, 4, 8, 16 plus jitter")
    webhook_max_retries: int = Field(5, description="Retries after the first attempt before dead-lettering")
    webhook_timeout_s: float = Field(10.0, description="Deadline of one callback POST")
    webhook_breaker_threshold: int = Field(5, description="Consecutive failures that open a host's circuit breaker")
    webhook_breaker_cooldown_s: float = Field(30.0, description="Open-breaker time before a trial delivery")
    webhook_lease_s: float = Field(30.0, description="How long a claimed outbox message is held by one dispatcher")
    webhook_poll_interval_s: float = Field(0.5, description="Outbox poll interval when idle")
    tractionbuild_base_url: str = Field("", description="TractionBuild API base for the results sync; empty = no sync")
    tractionbuild_api_key: str = Field("", description="Bearer credential for TractionBuild's API")
    callback_api_key: str = Field(
        "", description="Bearer credential sent with callbacks (the guide's 'API key validation'); signatures are always sent"
    )
    results_sync_interval_s: float = Field(86_400.0, description="Results sync schedule (daily by default)")
    idempotency_ttl_s: float = Field(
        86_400.0, ge=86_400.0,
        description="How long an Idempotency-Key's answer is kept (in the orchestrator's database; at least 24 h)",
    )
    rate_limits: str = Field(
        "", description="Per-token REST limits per minute: empty = the guide's, 'off', or overrides like 'status=5000,runs=200'"
    )
    status_cache: str = Field(
        "on", description="The gateway's GET /status cache fed by the orchestrator's run watch: on (10,000 runs), "
        "off, or the number of runs it keeps (0 = off)"
    )
    status_cache_staleness_ms: int = Field(
        250, ge=0, le=60_000,
        description="L: a gateway answers GET /status from its cache only while it has synced with the orchestrator "
        "within L, and callbacks are delivered no earlier than L after the dispatcher first sees them, so a client "
        "that got a callback never reads an older state. Every gateway and orchestrator must share it; 0 = no cache",
    )
    rate_limit_replicas: int = Field(
        1, ge=1, le=64,
        description="Gateway replicas that share each token's limits (the HPA's minReplicas): each enforces limit/N, rounded up",
    )

    @field_validator("rate_limits")
    @classmethod
    def _valid_rate_limits(cls, value: str) -> str:
        from services.gateway.ratelimit import limits_from_setting

        limits_from_setting(value)  # ValueError names the part
        return value

    @field_validator("status_cache")
    @classmethod
    def _valid_status_cache(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("on", "off") and not (value.isdigit() and int(value) <= 10_000_000):
            raise ValueError(f"must be on, off or a number of runs (0-10000000), got {value!r}")
        return value

    @model_validator(mode="after")
    def _barrier_fits_in_the_delivery_lease(self) -> "Settings":
        # A claimed callback waits up to the staleness bound before its delivery (the callback
        # barrier); past its lease another dispatcher could claim and send it too.
        if self.status_cache_staleness_ms / 1000 >= self.webhook_lease_s:
            raise ValueError(
                f"status_cache_staleness_ms ({self.status_cache_staleness_ms}) must be under webhook_lease_s "
                f"({self.webhook_lease_s} s): callbacks wait that long after they are claimed"
            )
        return self

    def status_cache_size(self) -> int:
        """Runs the gateway's status cache keeps (0 = off, also when the staleness bound is 0)."""
        if self.status_cache_staleness_ms <= 0 or self.status_cache == "off":
            return 0
        return STATUS_CACHE_DEFAULT_SIZE if self.status_cache == "on" else int(self.status_cache)

    @model_validator(mode="after")
    def _breaker_opens_before_retries_run_out(self) -> "Settings":
        # A host outage charges at most `threshold` failed attempts to a message before the breaker
        # opens (trials are charged to the breaker): above max_retries, an outage would dead-letter.
        if self.webhook_breaker_threshold > self.webhook_max_retries:
            raise ValueError(
                f"webhook_breaker_threshold ({self.webhook_breaker_threshold}) must not exceed webhook_max_retries "
                f"({self.webhook_max_retries}), or a receiver outage could dead-letter callbacks"
            )
        return self

    @field_validator("llm_base_url")
    @classmethod
    def _valid_llm_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not (value.startswith(("http://", "https://")) and len(value.split("://", 1)[1]) > 0):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value

    def llm_enabled(self) -> bool:
        """Whether persona narratives may call the model (both the provider and the model are named)."""
        return bool(self.llm_base_url and self.llm_model)

    @field_validator("service_tokens_accepted_until")
    @classmethod
    def _valid_overlap_end(cls, value: str) -> str:
        if value.strip():
            from smvm.auth import parse_utc

            parse_utc(value.strip())  # ValueError says what is wrong with the time
        return value.strip()

    @model_validator(mode="after")
    def _accepted_tokens_need_a_current_one(self) -> "Settings":
        if self.service_tokens_accepted.strip(" ,") and not self.service_token.strip(" ,"):
            raise ValueError("service_tokens_accepted needs service_token (the token this process sends) to be set")
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r}; expected one of {PROFILES}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        profile_file = CONFIG_DIR / f"{_profile()}.yaml"
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if profile_file.exists():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=profile_file))
        return tuple(sources)

    def addr(self, service: str) -> str:
        """The configured address of `service` (one of SERVICES)."""
        return getattr(self, f"{service}_addr")

    def accepted_tokens(self) -> frozenset[str]:
        tokens = {t.strip() for t in self.api_tokens.split(",") if t.strip()}
        if self.profile == "dev":
            tokens.add("dev-admin-token")
        return frozenset(tokens)

    def service_tokens(self) -> tuple[str, ...]:
        """The mesh's service tokens, current (the one sent) first, then every other accepted one."""
        listed = [t.strip() for t in f"{self.service_token},{self.service_tokens_accepted}".split(",") if t.strip()]
        return tuple(dict.fromkeys(listed))

    def webhook_signing_secrets(self) -> list[str]:
        """Secrets that sign callbacks, current first; outside prod a fixed secret stands in when none is set."""
        secrets = [s.strip() for s in self.webhook_secrets.split(",") if s.strip()]
        if not secrets and self.profile != "prod":
            secrets = ["dev-webhook-secret"]
        return secrets

    def env_for_children(self) -> dict[str, Any]:
        """Environment variables that reproduce these settings in a child process."""
        env = {}
        for name in type(self).model_fields:
            env[f"SMVM_{name.upper()}"] = str(getattr(self, name))
        return env


@functools.lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The process-wide settings (read once; tests build `Settings(...)` directly)."""
    return Settings()
