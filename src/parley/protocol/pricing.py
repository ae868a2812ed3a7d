"""Usage -> dollars.

Prices are USD per 1M tokens, read on PRICES_AS_OF from OpenAI's model pages (several audio
prices are marked unconfirmed in docs/protocol.md, section 7.8). They change: override
them with `PriceTable.with_overrides()` or the `PARLEY_PRICES` JSON file the server reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PRICES_AS_OF = "2026-11-21"


@dataclass(frozen=True)
class Price:
    text_in: float
    text_cached: float
    text_out: float
    audio_in: float
    audio_cached: float
    audio_out: float
    image_in: float = 0.0
    image_cached: float = 0.0


_GPT_REALTIME = Price(4.00, 0.40, 16.00, 32.00, 0.40, 64.00, 5.00, 0.50)
_MINI = Price(0.60, 0.06, 2.40, 10.00, 0.30, 20.00, 0.80, 0.08)

DEFAULT_PRICES: dict[str, Price] = {
    "gpt-realtime": _GPT_REALTIME,
    "gpt-realtime-1.5": _GPT_REALTIME,
    "gpt-realtime-2": replace(_GPT_REALTIME, text_out=24.00),
    "gpt-realtime-2.1": replace(_GPT_REALTIME, text_out=24.00),
    "gpt-realtime-mini": _MINI,
    "gpt-realtime-2.1-mini": _MINI,
    "gpt-4o-realtime-preview": Price(5.00, 2.50, 20.00, 40.00, 2.50, 80.00),
    "gpt-4o-realtime-preview-2024-10-01": Price(5.00, 2.50, 20.00, 100.00, 20.00, 200.00),
    "gpt-4o-mini-realtime-preview": Price(0.60, 0.30, 2.40, 10.00, 0.30, 20.00),
}

# Transcription models: per 1M tokens (input, output) or per minute.
TRANSCRIPTION_TOKEN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-transcribe": (2.50, 10.00),
    "gpt-4o-mini-transcribe": (1.25, 5.00),
}
TRANSCRIPTION_MINUTE_PRICES: dict[str, float] = {"whisper-1": 0.006, "gpt-realtime-whisper": 0.017}


_DATED = re.compile(r"^(?P<family>.+)-\d{4}-\d{2}-\d{2}$")


def _lookup(table: dict[str, T], model: str) -> T | None:
    if model in table:
        return table[model]
    dated = _DATED.match(model)
    return table.get(dated["family"]) if dated else None


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]

    def price(self, model: str) -> Price | None:
        """The price of a model; a dated snapshot (`name-YYYY-MM-DD`) falls back to its family."""
        return _lookup(self.prices, model)

    def with_overrides(self, overrides: dict[str, dict[str, float]]) -> PriceTable:
        prices = dict(self.prices)
        for model, fields in overrides.items():
            base = self.price(model) or Price(0, 0, 0, 0, 0, 0)
            prices[model] = replace(base, **fields)
        return PriceTable(prices)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        return DEFAULT_TABLE.with_overrides(json.loads(Path(path).read_text()))

    def response_cost(self, model: str, usage: dict[str, Any] | None) -> float:
        """Dollars for one `response.done` usage object (0 for an unknown model)."""
        price = self.price(model)
        if price is None or not usage:
            return 0.0
        itd = usage.get("input_token_details") or {}
        otd = usage.get("output_token_details") or {}
        ctd = itd.get("cached_tokens_details")
        if ctd is None:
            # Beta usage has no per-modality split of cached tokens; count them as text first.
            cached = itd.get("cached_tokens") or 0
            text_cached = min(cached, itd.get("text_tokens") or 0)
            ctd = {"text_tokens": text_cached, "audio_tokens": cached - text_cached}
        text_c, audio_c, image_c = (ctd.get(k) or 0 for k in ("text_tokens", "audio_tokens", "image_tokens"))
        total = (
            ((itd.get("text_tokens") or 0) - text_c) * price.text_in + text_c * price.text_cached
            + ((itd.get("audio_tokens") or 0) - audio_c) * price.audio_in + audio_c * price.audio_cached
            + ((itd.get("image_tokens") or 0) - image_c) * price.image_in + image_c * price.image_cached
            + (otd.get("text_tokens") or 0) * price.text_out + (otd.get("audio_tokens") or 0) * price.audio_out
        )
        return total / 1e6

    def transcription_cost(self, model: str | None, usage: dict[str, Any] | None) -> float:
        """Dollars for one `...input_audio_transcription.completed` usage object."""
        if not usage or not model:
            return 0.0
        if usage.get("type") == "duration":
            return (_lookup(TRANSCRIPTION_MINUTE_PRICES, model) or 0.0) * float(usage.get("seconds", 0)) / 60
        rates = _lookup(TRANSCRIPTION_TOKEN_PRICES, model)
        if rates is None:
            return 0.0
        return ((usage.get("input_tokens") or 0) * rates[0] + (usage.get("output_tokens") or 0) * rates[1]) / 1e6


DEFAULT_TABLE = PriceTable(DEFAULT_PRICES)


def response_cost(model: str, usage: dict[str, Any] | None) -> float:
    return DEFAULT_TABLE.response_cost(model, usage)
