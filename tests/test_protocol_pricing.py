"""Usage -> dollars (docs/protocol.md, section 7.8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.protocol import DEFAULT_TABLE, PriceTable, events, response_cost
from parley.protocol.pricing import Price

# The usage object of the spec example (docs/protocol.md 3.4): 132 = 119 text + 13 audio, 64 cached (all
# text), 121 = 30 text + 91 audio out, 253 in total.
SPEC_USAGE = events.usage(input_text=119, input_audio=13, cached_text=64, output_text=30, output_audio=91)
WORKED_EXAMPLE = (55 * 4.00 + 64 * 0.40 + 13 * 32.00 + 30 * 16.00 + 91 * 64.00) / 1e6  # = 0.0069656


def test_spec_usage_totals() -> None:
    assert SPEC_USAGE["input_tokens"] == 132
    assert SPEC_USAGE["output_tokens"] == 121
    assert SPEC_USAGE["total_tokens"] == 253
    assert SPEC_USAGE["input_token_details"]["cached_tokens"] == 64
    assert SPEC_USAGE["input_token_details"]["cached_tokens_details"] == {
        "text_tokens": 64, "audio_tokens": 0, "image_tokens": 0}


def test_worked_example() -> None:
    assert WORKED_EXAMPLE == pytest.approx(0.0069656)
    assert response_cost("gpt-realtime", SPEC_USAGE) == pytest.approx(0.0069656, rel=1e-9)
    assert DEFAULT_TABLE.response_cost("gpt-realtime", SPEC_USAGE) == pytest.approx(0.0069656, rel=1e-9)


def test_spec_usage_as_it_arrives_on_the_wire() -> None:
    wire = {"total_tokens": 253, "input_tokens": 132, "output_tokens": 121,
            "input_token_details": {"text_tokens": 119, "audio_tokens": 13, "image_tokens": 0, "cached_tokens": 64,
                                    "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0,
                                                              "image_tokens": 0}},
            "output_token_details": {"text_tokens": 30, "audio_tokens": 91}}
    assert wire == SPEC_USAGE
    assert response_cost("gpt-realtime", json.loads(json.dumps(wire))) == pytest.approx(0.0069656, rel=1e-9)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-realtime-2025-08-28", "gpt-realtime"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-12-15", "gpt-realtime-mini"),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2025-06-03", "gpt-4o-realtime-preview"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
        ("gpt-realtime-2.1-mini-2026-06-01", "gpt-realtime-2.1-mini"),
    ],
)
def test_dated_snapshots_map_to_their_family(model: str, family: str) -> None:
    assert DEFAULT_TABLE.price(model) == DEFAULT_TABLE.price(family) is not None
    assert response_cost(model, SPEC_USAGE) == response_cost(family, SPEC_USAGE)


def test_the_2024_10_01_preview_has_its_own_audio_prices() -> None:
    old = DEFAULT_TABLE.price("gpt-4o-realtime-preview-2024-10-01")
    assert old is not None
    assert (old.audio_in, old.audio_cached, old.audio_out) == (100.00, 20.00, 200.00)
    assert old != DEFAULT_TABLE.price("gpt-4o-realtime-preview")


@pytest.mark.parametrize(
    ("model", "prices"),
    [  # docs/protocol.md, section 7.8: text in, cached, out; audio in, cached, out
        ("gpt-realtime", (4.00, 0.40, 16.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-1.5", (4.00, 0.40, 16.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-2", (4.00, 0.40, 24.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-mini", (0.60, 0.06, 2.40, 10.00, 0.30, 20.00)),
        ("gpt-realtime-2.1-mini", (0.60, 0.06, 2.40, 10.00, 0.30, 20.00)),
        ("gpt-4o-realtime-preview", (5.00, 2.50, 20.00, 40.00, 2.50, 80.00)),
        ("gpt-4o-mini-realtime-preview", (0.60, 0.30, 2.40, 10.00, 0.30, 20.00)),
    ],
)
def test_price_table_matches_the_reference(model: str, prices: tuple[float, ...]) -> None:
    p = DEFAULT_TABLE.price(model)
    assert p is not None
    assert (p.text_in, p.text_cached, p.text_out, p.audio_in, p.audio_cached, p.audio_out) == prices


def test_image_tokens() -> None:
    usage = events.usage(input_image=1000, cached_image=200)
    assert response_cost("gpt-realtime", usage) == pytest.approx((800 * 5.00 + 200 * 0.50) / 1e6)


@pytest.mark.parametrize("model", ["gpt-5", "whisper-1", "", "my-local-model", "realtime", "GPT-REALTIME"])
def test_unknown_model_costs_nothing(model: str) -> None:
    assert DEFAULT_TABLE.price(model) is None
    assert response_cost(model, SPEC_USAGE) == 0.0


@pytest.mark.parametrize("model", ["gpt-realtime-3", "gpt-realtime-whisper", "gpt-realtime-mini-tts"])
def test_only_dated_snapshots_fall_back(model: str) -> None:
    assert DEFAULT_TABLE.price(model) is None


@pytest.mark.parametrize("usage", [None, {}, {"total_tokens": 0}])
def test_missing_usage_costs_nothing(usage: Any) -> None:
    assert response_cost("gpt-realtime", usage) == 0.0


def test_overrides() -> None:
    table = DEFAULT_TABLE.with_overrides({"gpt-realtime": {"audio_out": 80.00}})
    expected = WORKED_EXAMPLE + 91 * (80.00 - 64.00) / 1e6
    assert table.response_cost("gpt-realtime", SPEC_USAGE) == pytest.approx(expected)
    # the default table is untouched, and snapshots still follow their (overridden) family
    assert DEFAULT_TABLE.response_cost("gpt-realtime", SPEC_USAGE) == pytest.approx(WORKED_EXAMPLE)
    assert table.response_cost("gpt-realtime-2025-08-28", SPEC_USAGE) == pytest.approx(expected)


def test_override_of_a_snapshot_starts_from_its_family() -> None:
    table = DEFAULT_TABLE.with_overrides({"gpt-realtime-2025-08-28": {"text_in": 1.00}})
    snap, family = table.price("gpt-realtime-2025-08-28"), table.price("gpt-realtime")
    assert snap is not None and family is not None
    assert snap.text_in == 1.00 and family.text_in == 4.00
    assert snap.audio_out == family.audio_out == 64.00


def test_override_of_an_unknown_model() -> None:
    table = DEFAULT_TABLE.with_overrides({"my-local-model": {"text_in": 1.0, "text_out": 2.0}})
    assert table.response_cost("my-local-model", events.usage(input_text=1000, output_text=500)) == pytest.approx(
        (1000 * 1.0 + 500 * 2.0) / 1e6)
    assert table.price("my-local-model") == Price(1.0, 0, 2.0, 0, 0, 0)


def test_overrides_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-realtime": {"text_in": 0.0, "text_cached": 0.0}}))
    table = PriceTable.from_file(path)
    assert table.response_cost("gpt-realtime", SPEC_USAGE) == pytest.approx(WORKED_EXAMPLE - (55 * 4 + 64 * 0.4) / 1e6)
    assert table.price("gpt-realtime-mini") == DEFAULT_TABLE.price("gpt-realtime-mini")


def _beta_usage(text: int, audio: int, cached: int, out_text: int, out_audio: int) -> dict[str, Any]:
    # The beta SDK's usage has no cached_tokens_details and no image_tokens.
    return {"total_tokens": text + audio + out_text + out_audio, "input_tokens": text + audio,
            "output_tokens": out_text + out_audio,
            "input_token_details": {"text_tokens": text, "audio_tokens": audio, "cached_tokens": cached},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}


def test_beta_usage_without_cached_details_counts_cached_tokens_as_text() -> None:
    usage = _beta_usage(119, 13, 64, 30, 91)
    assert response_cost("gpt-realtime", usage) == pytest.approx(WORKED_EXAMPLE, rel=1e-9)


def test_beta_usage_with_more_cached_than_text_tokens() -> None:
    # Cached tokens count as text first (docs/protocol.md 7.8): those beyond the text tokens are audio.
    usage = _beta_usage(10, 100, 64, 0, 0)
    expected = (10 * 0.40 + (100 - 54) * 32.00 + 54 * 0.40) / 1e6
    assert response_cost("gpt-realtime", usage) == pytest.approx(expected)


@settings(max_examples=300, deadline=None)
@given(
    text=st.integers(0, 50_000), audio=st.integers(0, 50_000), out_text=st.integers(0, 5000),
    out_audio=st.integers(0, 5000), cached_share=st.floats(0, 1), model=st.sampled_from(sorted(DEFAULT_TABLE.prices)),
)
def test_cost_is_bounded_by_uncached_and_fully_cached_prices(
    text: int, audio: int, out_text: int, out_audio: int, cached_share: float, model: str
) -> None:
    cached = int((text + audio) * cached_share)
    p = DEFAULT_TABLE.price(model)
    assert p is not None
    out = out_text * p.text_out + out_audio * p.audio_out
    highest = (text * max(p.text_in, p.text_cached) + audio * max(p.audio_in, p.audio_cached) + out) / 1e6
    lowest = (text * min(p.text_in, p.text_cached) + audio * min(p.audio_in, p.audio_cached) + out) / 1e6
    beta = response_cost(model, _beta_usage(text, audio, cached, out_text, out_audio))
    assert lowest - 1e-12 <= beta <= highest + 1e-12
    cached_text = min(cached, text)
    ga = response_cost(model, events.usage(input_text=text, input_audio=audio, cached_text=cached_text,
                                           cached_audio=cached - cached_text, output_text=out_text,
                                           output_audio=out_audio))
    assert ga == pytest.approx(beta, rel=1e-9, abs=1e-15)


# -- transcription -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "seconds", "dollars"),
    [("whisper-1", 90.0, 0.009), ("gpt-realtime-whisper", 60.0, 0.017), ("whisper-1", 0.0, 0.0)],
)
def test_transcription_duration_cost(model: str, seconds: float, dollars: float) -> None:
    usage = events.transcription_usage_duration(seconds)
    assert DEFAULT_TABLE.transcription_cost(model, usage) == pytest.approx(dollars)


@pytest.mark.parametrize(
    ("model", "rates"), [("gpt-4o-transcribe", (2.50, 10.00)), ("gpt-4o-mini-transcribe", (1.25, 5.00))]
)
def test_transcription_token_cost(model: str, rates: tuple[float, float]) -> None:
    usage = events.transcription_usage_tokens(1000, 100, audio_tokens=900)
    assert usage["total_tokens"] == 1100
    assert DEFAULT_TABLE.transcription_cost(model, usage) == pytest.approx((1000 * rates[0] + 100 * rates[1]) / 1e6)


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        (None, events.transcription_usage_duration(60)),
        ("gpt-4o-transcribe", None),
        ("unknown-asr", events.transcription_usage_duration(60)),
        ("unknown-asr", events.transcription_usage_tokens(1000, 100)),
        ("whisper-1", events.transcription_usage_tokens(1000, 100)),  # billed per minute, not per token
    ],
)
def test_transcription_cost_unknown_is_zero(model: str | None, usage: dict[str, Any] | None) -> None:
    assert DEFAULT_TABLE.transcription_cost(model, usage) == 0.0


def test_dated_transcription_snapshot() -> None:
    usage = events.transcription_usage_tokens(1000, 100)
    assert DEFAULT_TABLE.transcription_cost("gpt-4o-mini-transcribe-2025-12-15", usage) == pytest.approx(
        DEFAULT_TABLE.transcription_cost("gpt-4o-mini-transcribe", usage))
