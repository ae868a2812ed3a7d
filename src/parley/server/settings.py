"""The Parley server's settings: environment variables `PARLEY_*` (and `.env`), documented in docs/server.md.

The upstream is chosen once at start:

* `local` (the default when nothing else is configured): Parley's own engine, mounted in the
  same process at `/v1` and reached without a socket;
* `openai`: when `OPENAI_API_KEY` is set (base URL `OPENAI_BASE_URL` / `PARLEY_OPENAI_BASE_URL`);
* `url`: any OpenAI-compatible realtime engine at `PARLEY_UPSTREAM_URL` (e.g. `parley engine` on
  another host), with `PARLEY_UPSTREAM_API_KEY` (or `OPENAI_API_KEY`) as its key;
* `pool` (`PARLEY_UPSTREAM_POOL=1`): the `parley engine` processes registered in Redis, each call
  sent to the least-loaded (`parley.server.pool`), with the same key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

UpstreamKind = Literal["local", "openai", "url", "pool"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "parley"


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    # -- upstream ----------------------------------------------------------------------------
    upstream: Literal["auto", "local", "openai", "url", "pool"] = "auto"
    upstream_url: str | None = None  # e.g. http://127.0.0.1:8001/v1 (an engine by URL)
    upstream_api_key: SecretStr | None = None  # the key for upstream_url (default: OPENAI_API_KEY)
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PARLEY_OPENAI_API_KEY", "OPENAI_API_KEY"))
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        validation_alias=AliasChoices("PARLEY_OPENAI_BASE_URL", "OPENAI_BASE_URL"))
    # The base URL browsers use to reach the upstream (calls_url of /api/session); default derived.
    upstream_public_url: str | None = None
    # How the server reaches itself for the in-process engine's sideband WebSocket (default:
    # the address the request came in on).
    self_url: str | None = None
    # A pool of `parley engine` processes registered in Redis (needs PARLEY_REDIS_URL): each new call
    # goes to the least-loaded live engine below these thresholds (docs/deployment.md).
    upstream_pool: bool = False
    upstream_pool_max_calls: int = Field(default=50, ge=1)  # live sessions per engine
    upstream_pool_max_cpu: float = Field(default=1.8, gt=0)  # cores busy per engine (its last second)
    upstream_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    upstream_retries: int = Field(default=2, ge=0, le=5)

    # -- sessions ----------------------------------------------------------------------------
    model: str = "gpt-realtime"
    transcription_model: str = "whisper-1"
    transcription_language: str | None = "en"
    vad_silence_ms: int = Field(default=500, ge=100, le=5000)
    ephemeral_key_ttl_seconds: int = Field(default=60, ge=10, le=7200)

    # -- storage -----------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # default: a SQLite file in data_dir
    prices: Path | None = None  # JSON price overrides, {"gpt-realtime": {"audio_out": 64.0}}
    # Where call recordings are kept (default: data_dir/audio); with N processes, a directory they all share.
    recordings_dir: Path | None = None

    # -- shared mode (N processes): hot state, leases and limits in Redis ---------------------
    redis_url: str | None = None  # redis://host:6379/0, rediss://..., unix:///path/redis.sock
    redis_prefix: str = Field(default="parley", min_length=1, max_length=64)  # keys are "<prefix>:..."
    slot_lease_seconds: float = Field(default=30.0, ge=1, le=3600)  # a dead process's call slots lapse after this

    # -- auth --------------------------------------------------------------------------------
    auth: Literal["none", "bearer", "cookie"] = "none"
    # user -> token, as JSON: PARLEY_AUTH_TOKENS='{"alice": "long-random-token"}'
    auth_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    session_secret: SecretStr | None = None  # signs cookies; random per process when unset
    session_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    cookie_secure: bool = False
    cors_origins: list[str] = Field(default_factory=list)
    metrics_token: SecretStr | None = None  # when set, /metrics needs `Authorization: Bearer <it>`
    trust_forwarded_for: bool = False  # use X-Forwarded-For for the client address (behind a proxy)

    # -- limits and caps ---------------------------------------------------------------------
    rate_limit_per_minute: float = Field(default=20.0, gt=0)  # /api/session + /api/calls, per user
    rate_limit_burst: int = Field(default=5, ge=1)
    max_concurrent_calls: int = Field(default=2, ge=1)
    max_call_seconds: float = Field(default=900.0, gt=0)
    max_call_cost_usd: float = Field(default=2.0, gt=0)
    daily_cost_cap_usd: float = Field(default=10.0, gt=0)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_sdp_bytes: int = Field(default=64 * 1024, ge=512)
    max_events_per_report: int = Field(default=500, ge=1)
    max_events_per_call: int = Field(default=20_000, ge=1)
    max_audio_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)  # a call's recording (mic + agent)
    direct_idle_seconds: float = Field(default=120.0, gt=0)  # a browser-direct call with no report for this long is over

    # -- phone calls (OpenAI's SIP trunking, docs/telephony.md) --------------------------------
    # The Standard Webhooks secret of the OpenAI webhook for `realtime.call.incoming` ("whsec_...").
    openai_webhook_secret: SecretStr | None = None
    phone_persona: str = "negotiator/sarah"  # who answers a phone call
    transfer_to: str | None = None  # "transfer me to a human": a tel: or sip: URI for SIP REFER
    webhook_replay_seconds: float = Field(default=24 * 3600.0, gt=0)  # how long a webhook id is remembered

    log_level: str = "info"

    # -- telephony (docs/telephony.md) -----------------------------------------------------------
    # The server's public https:// base URL (what Twilio calls; what signatures are computed over).
    public_url: str | None = None
    twilio_auth_token: SecretStr | None = None  # checks X-Twilio-Signature on the voice webhook
    twilio_insecure: bool = False  # no token: accept unsigned webhooks anyway (local testing only)
    twilio_numbers: dict[str, str] = Field(default_factory=dict)  # number called (E.164) -> persona id
    twilio_user: str = Field(default="phone", min_length=1, max_length=128)  # whose History phone calls are in

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("upstream_url", "upstream_public_url", "self_url", "openai_base_url", "public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value or None

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        kind = self.upstream_kind
        if kind == "openai" and not self.openai_api_key:
            raise ValueError("PARLEY_UPSTREAM=openai needs OPENAI_API_KEY")
        if kind == "url" and not self.upstream_url:
            raise ValueError("PARLEY_UPSTREAM=url needs PARLEY_UPSTREAM_URL")
        if kind == "pool" and not self.redis_url:
            raise ValueError("PARLEY_UPSTREAM_POOL=1 needs PARLEY_REDIS_URL, where the engines register")
        if self.auth != "none" and not self.auth_tokens:
            raise ValueError(f"PARLEY_AUTH={self.auth} needs PARLEY_AUTH_TOKENS (a JSON object user -> token)")
        if self.shared:
            self._check_shared()
        return self

    def _check_shared(self) -> None:
        """Shared mode refuses what would quietly give each process state of its own."""
        if not self.database.startswith("postgresql"):
            raise ValueError("shared mode (PARLEY_REDIS_URL) needs PostgreSQL: set PARLEY_DATABASE_URL="
                             "postgresql://user@host/db; a SQLite file belongs to one process")
        if self.session_secret is None or len(self.session_secret.get_secret_value()) < 16:
            raise ValueError("shared mode (PARLEY_REDIS_URL) needs PARLEY_SESSION_SECRET (16+ characters), the same "
                             "on every process, so that a cookie signed by one is valid at all")
        if self.recordings_dir is None:
            raise ValueError("shared mode (PARLEY_REDIS_URL) needs PARLEY_RECORDINGS_DIR, a directory every "
                             "process shares (a volume, NFS), so any process can serve a call's recording")

    @property
    def shared(self) -> bool:
        """N processes share state: Redis (hot state, leases, limits) and PostgreSQL (durable state)."""
        return bool(self.redis_url)

    @property
    def recordings(self) -> Path:
        return self.recordings_dir or self.data_dir / "audio"

    @property
    def upstream_kind(self) -> UpstreamKind:
        if self.upstream != "auto":
            return self.upstream
        if self.upstream_pool:
            return "pool"
        if self.upstream_url:
            return "url"
        if self.openai_api_key:
            return "openai"
        return "local"

    @property
    def upstream_key(self) -> str | None:
        """The standard key the server uses upstream (None for the in-process engine)."""
        kind = self.upstream_kind
        if kind == "openai":
            return self.openai_api_key.get_secret_value() if self.openai_api_key else None
        if kind in ("url", "pool"):
            key = self.upstream_api_key or self.openai_api_key
            return key.get_secret_value() if key else "parley-no-key"
        return None

    @property
    def database(self) -> str:
        return normalize_database_url(self.database_url or f"sqlite:///{self.data_dir / 'parley.db'}")


def normalize_database_url(url: str) -> str:
    """Pick the async driver: sqlite -> aiosqlite, postgres(ql) -> asyncpg."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url
