"""The local engine's settings (environment variables `PARLEY_ENGINE_*`, or `.env`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.ice import IceServer


class EngineSettings(BaseSettings):
    """Settings of the local engine (environment variables `PARLEY_ENGINE_*`, or `.env`)."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_ENGINE_", env_file=".env", extra="ignore")

    # Standard keys the engine accepts. Empty: any non-empty key (fine on loopback, say so).
    api_keys: list[str] = Field(default_factory=list)
    # "scenario": the practice scenarios' scripted personas (their responder is given to the engine by
    # whoever builds it: `parley engine`, `parley serve`); "chat": chat_url's model; "generic": the
    # engine's own scripted assistant.
    responder: Literal["scenario", "chat", "generic"] = "scenario"
    chat_url: str | None = None  # an OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1
    chat_model: str = "llama3.2"
    chat_api_key: str | None = None
    # Host addresses offered as ICE candidates for WebRTC calls (empty: the machine's own).
    ice_hosts: list[str] = Field(default_factory=list)
    # STUN/TURN servers for WebRTC calls, e.g. [{"urls": "stun:stun.example.org:3478"}] (default none).
    ice_servers: list[IceServer] = Field(default_factory=list)
    # Request bodies larger than this get 413 (a session with long instructions fits many times).
    max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    warm_up: bool = True

    # -- a pool of engines (`parley.engine.pool`; `parley engine` only) -----------------------
    redis_url: str | None = None  # registers this engine in Redis with its load
    redis_prefix: str = Field(default="parley", min_length=1, max_length=64)  # the servers' PARLEY_REDIS_PREFIX
    pool_url: str | None = None  # the base URL servers reach this engine at, e.g. http://10.0.0.5:8001/v1
    pool_id: str | None = None  # its name in call ids (1-16 of a-z, 0-9); default random
    heartbeat_seconds: float = Field(default=1.0, gt=0, le=60)
    # SIGTERM: how long live calls may go on (no new ones taken) before the engine exits anyway.
    drain_seconds: float = Field(default=300.0, ge=0, le=86400)

    # -- SIP (the engine plays OpenAI's SIP side, see docs/telephony.md) ----------------------
    # "host:port" to take SIP calls on (UDP), e.g. 127.0.0.1:5060; unset: no SIP.
    sip_addr: str | None = None
    # Where each INVITE is announced with a signed `realtime.call.incoming` webhook, and the
    # Standard Webhooks secret it is signed with ("whsec_" + base64, as OpenAI's).
    sip_webhook_url: str | None = None
    sip_webhook_secret: SecretStr | None = None

    @field_validator("sip_addr")
    @classmethod
    def _check_sip_addr(cls, value: str | None) -> str | None:
        if value:
            sip_host_port(value)
        return value or None


def sip_host_port(addr: str) -> tuple[str, int]:
    """("127.0.0.1", 5060) from "127.0.0.1:5060" (or "[::1]:5060"); ValueError when malformed."""
    host, sep, port = addr.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be host:port, e.g. 127.0.0.1:5060 (got {addr[:100]!r})")
    return host, int(port)
