"""Reconnect policy, key providers, usage and latency bookkeeping."""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parley.protocol.pricing import DEFAULT_TABLE, PriceTable

__all__ = ["Key", "KeyProvider", "ReconnectPolicy", "TurnLatency", "Usage", "resolve_key"]


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often to reconnect after a drop.

    The delay before attempt k (1-based) is `min(max_delay, initial_delay * factor**(k-1))`,
    scaled by a random factor in [1 - jitter, 1 + jitter] so that many clients dropped at once
    do not come back in lockstep. `max_attempts=None` tries forever.
    """

    enabled: bool = True
    max_attempts: int | None = 10
    initial_delay: float = 0.1
    max_delay: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2
    #: Reconnect also when the server closed the WebSocket normally (code 1000).
    on_normal_close: bool = False
    #: Also retry the very first connection (otherwise `connect()` raises at once).
    retry_initial: bool = False
    #: Ask for a new response when one was cut off by the drop.
    resume_response: bool = True
    #: Seconds to wait for `session.created`, `session.updated` and the replay's acknowledgements.
    handshake_timeout: float = 10.0

    def base_delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.initial_delay * self.factor ** max(attempt - 1, 0)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = self.base_delay(attempt)
        if self.jitter <= 0:
            return base
        r = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + r))

    def schedule(self, attempts: int) -> list[float]:
        """The base (jitter-free) delays before attempts 1..`attempts`."""
        return [self.base_delay(k) for k in range(1, attempts + 1)]

    @classmethod
    def disabled(cls) -> ReconnectPolicy:
        return cls(enabled=False, max_attempts=0)


@dataclass(frozen=True)
class Key:
    value: str
    expires_at: float | None = None  # unix seconds

    @property
    def ephemeral(self) -> bool:
        return self.value.startswith("ek_")

    def expiring(self, margin: float = 5.0) -> bool:
        return self.expires_at is not None and self.expires_at - time.time() < margin


KeyProvider = Callable[[], Any]  # returns (or awaits to) a str, a client_secrets dict, or an SDK object


async def resolve_key(provider: KeyProvider) -> Key:
    """Call a key provider and normalise what it gave: an `ek_...` string, the JSON of
    `POST /v1/realtime/client_secrets` (`{"value", "expires_at"}`), the beta shape
    (`{"client_secret": {"value", "expires_at"}}`), or the openai SDK's response object."""
    value = provider()
    if inspect.isawaitable(value):
        value = await value
    return key_from(value)


def key_from(value: Any) -> Key:
    if isinstance(value, Key):
        return value
    if isinstance(value, str):
        return Key(value)
    if isinstance(value, dict):
        if isinstance(value.get("client_secret"), dict):
            value = value["client_secret"]
        if isinstance(value.get("value"), str):
            exp = value.get("expires_at")
            return Key(value["value"], float(exp) if isinstance(exp, int | float) else None)
    secret = getattr(value, "value", None)
    if isinstance(secret, str):
        exp = getattr(value, "expires_at", None)
        return Key(secret, float(exp) if isinstance(exp, int | float) else None)
    raise TypeError(f"a key provider must return a key string or a client secret, not {type(value).__name__}")


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


# -- usage and cost -------------------------------------------------------------------------


@dataclass
class Usage:
    """Tokens over every `response.done` of the client's sessions, and what they cost."""

    responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    transcription_seconds: float = 0.0
    transcription_tokens: int = 0
    response_cost: float = 0.0
    transcription_cost: float = 0.0
    prices: PriceTable = field(default=DEFAULT_TABLE, repr=False)

    @property
    def cost(self) -> float:
        """Dollars so far (responses and input transcription), at the price table's rates."""
        return self.response_cost + self.transcription_cost

    def add_response(self, model: str, usage: dict[str, Any] | None) -> float:
        if not isinstance(usage, dict):
            return 0.0
        self.responses += 1
        itd = usage.get("input_token_details") or {}
        otd = usage.get("output_token_details") or {}
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        self.total_tokens += _int(usage.get("total_tokens"))
        self.input_text_tokens += _int(itd.get("text_tokens"))
        self.input_audio_tokens += _int(itd.get("audio_tokens"))
        self.input_image_tokens += _int(itd.get("image_tokens"))
        self.cached_tokens += _int(itd.get("cached_tokens"))
        self.output_text_tokens += _int(otd.get("text_tokens"))
        self.output_audio_tokens += _int(otd.get("audio_tokens"))
        try:
            cost = self.prices.response_cost(model, usage)
        except (TypeError, ValueError, AttributeError):
            cost = 0.0
        self.response_cost += cost
        return cost

    def add_transcription(self, model: str | None, usage: dict[str, Any] | None) -> float:
        if not isinstance(usage, dict):
            return 0.0
        if usage.get("type") == "duration":
            seconds = usage.get("seconds")
            self.transcription_seconds += float(seconds) if isinstance(seconds, int | float) else 0.0
        else:
            self.transcription_tokens += _int(usage.get("total_tokens"))
        try:
            cost = self.prices.transcription_cost(model, usage)
        except (TypeError, ValueError, AttributeError):
            cost = 0.0
        self.transcription_cost += cost
        return cost


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- latency ------------------------------------------------------------------------------------


@dataclass
class TurnLatency:
    """How long one response took, measured at the client (milliseconds from `trigger`).

    `trigger` is what started the turn: "speech" (the server's `speech_stopped` arrived),
    "request" (this client sent `response.create`), "tool" (the automatic answer to a tool call)
    or "server" (a response nobody here asked for).
    """

    response_id: str
    trigger: str
    started_at: float  # time.monotonic()
    created_ms: float | None = None
    first_audio_ms: float | None = None
    first_text_ms: float | None = None
    done_ms: float | None = None
    status: str | None = None

    @property
    def first_output_ms(self) -> float | None:
        values = [v for v in (self.first_audio_ms, self.first_text_ms) if v is not None]
        return min(values) if values else None

    def mark(self, attr: str, now: float) -> None:
        if getattr(self, attr) is None:
            setattr(self, attr, (now - self.started_at) * 1000)
