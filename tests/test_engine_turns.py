"""Turn detection rules of the engine's session, with a scripted voice detector and no model.

The session is given a `VoiceDetector`; here it is one that reports the probabilities a script
says, frame by frame, so each rule (two frames start a turn, hysteresis, the silence window, the
speculative transcript inside it, semantic_vad's eagerness) is checked exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from parley.audio.pcm import SAMPLE_RATE
from parley.engine.session import VAD_FRAME_MS, Session, Transcribe
from parley.engine.turns import ONSET_LOOKBACK_MS, PAUSE_MS
from parley.protocol.session import parse_session
from support.session import FRAME, ScriptedDetector, speech_between


def run(script: Callable[[float], float], total_ms: int, turn_detection: dict[str, Any],
        loud: Callable[[float], bool] | None = None) -> tuple[list[tuple[float, Any]], ScriptedDetector]:
    """Feed `total_ms` of audio in 20 ms chunks (a tone where `loud` says, else silence); every
    output with the audio ms fed when it came out."""
    detector = ScriptedDetector(script)
    config = parse_session({"type": "realtime", "audio": {"input": {"turn_detection": turn_detection,
                                                                    "transcription": {"model": "whisper-1"}}}})
    session = Session(config, detector=detector, now=1_700_000_000.0)
    loud = loud or (lambda t: script(t) > 0.5)
    out: list[tuple[float, Any]] = []
    step = SAMPLE_RATE * 20 // 1000
    t = np.arange(step) / SAMPLE_RATE
    for i in range(total_ms // 20):
        ms = (i + 1) * 20
        chunk = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32) if loud(ms) else np.zeros(step, np.float32)
        session.receive_audio(chunk)
        out += [(ms, o) for o in session.take()]
    session.close()
    return out, detector


def kinds(out: list[tuple[float, Any]]) -> list[str]:
    return [o["type"] if isinstance(o, dict) else type(o).__name__ for _, o in out]


def first(out: list[tuple[float, Any]], kind: str) -> tuple[float, Any]:
    return next((ms, o) for ms, o in out if (o.get("type") if isinstance(o, dict) else type(o).__name__) == kind)


SERVER_VAD = {"type": "server_vad", "silence_duration_ms": 300, "prefix_padding_ms": 100, "create_response": False}


def test_two_frames_start_a_turn_and_the_window_ends_it() -> None:
    out, detector = run(speech_between(512, 1504), 2400, SERVER_VAD)
    assert kinds(out)[:2] == ["input_audio_buffer.speech_started", "Transcribe"]
    _, started = first(out, "input_audio_buffer.speech_started")
    # the first frame above the threshold began at 512 ms; the prefix padding goes back 100 ms
    assert started["audio_start_ms"] == 512 - 100
    _, stopped = first(out, "input_audio_buffer.speech_stopped")
    # 300 ms of silence after the sound ended (1500 ms: the last loud chunk), at a frame's end
    assert 1500 + 300 <= stopped["audio_end_ms"] < 1500 + 300 + VAD_FRAME_MS
    assert stopped["item_id"] == started["item_id"]
    assert "input_audio_buffer.committed" in kinds(out) and detector.closed


def test_one_loud_frame_is_not_speech() -> None:
    out, _ = run(lambda t: 0.9 if t == 1024 else 0.05, 2000, SERVER_VAD)
    assert kinds(out) == []


def test_hysteresis_keeps_a_turn_through_a_dip() -> None:
    # below the threshold (0.5) but above threshold - 0.15: still speech
    script = lambda t: 0.9 if 512 < t <= 1024 or 1312 < t <= 1600 else (0.4 if 1024 < t <= 1312 else 0.05)  # noqa: E731
    out, _ = run(script, 2600, SERVER_VAD, loud=lambda t: 512 < t <= 1600)
    assert kinds(out).count("input_audio_buffer.speech_started") == 1
    _, stopped = first(out, "input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] > 1600


def test_a_word_scored_under_the_threshold_before_the_speech_starts_the_turn() -> None:
    # "Oh, that's...": silero scores the short first word 0.36-0.42, under the threshold, then a
    # pause, then the rest. The turn starts at that word, or the STT never hears it.
    script = lambda t: 0.4 if 320 < t <= 448 else (0.9 if 704 < t <= 1504 else 0.05)  # noqa: E731
    out, _ = run(script, 2400, SERVER_VAD, loud=lambda t: 320 < t <= 448 or 704 < t <= 1504)
    assert kinds(out).count("input_audio_buffer.speech_started") == 1
    _, started = first(out, "input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == 320 - 100
    job = next(o for _, o in out if isinstance(o, Transcribe))
    assert job.audio.size >= (1504 - 220) * SAMPLE_RATE / 1000


def test_the_turn_looks_back_only_so_far_and_only_at_maybe_voice() -> None:
    # the turn's first frame over the threshold begins at 1504 ms. A frame that may be voice
    # (0.4) more than the look-back before it, and a weaker one (0.3: under threshold - 0.15)
    # inside it, leave the turn's start there.
    # (the turn starts on its second frame over the threshold, which ends at 1568 ms: the
    # look-back holds the frames that end after 568 ms; the last one before ends at 544)
    early = (1568 - ONSET_LOOKBACK_MS) // VAD_FRAME_MS * VAD_FRAME_MS
    script = lambda t: 0.4 if t == early else 0.3 if t == 1472 else 0.9 if 1504 < t <= 2600 else 0.05  # noqa: E731
    out, _ = run(script, 3600, SERVER_VAD, loud=lambda t: 1504 < t <= 2600)
    _, started = first(out, "input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == 1504 - 100


def test_the_speculative_transcript_starts_inside_the_silence_window() -> None:
    out, _ = run(speech_between(512, 1504), 2400, {**SERVER_VAD, "silence_duration_ms": 500})
    at, job = next((ms, o) for ms, o in out if isinstance(o, Transcribe))
    stop_at, _ = first(out, "input_audio_buffer.speech_stopped")
    assert at < stop_at  # the STT has the rest of the window
    # from the speech's start (with its prefix padding) into the pause, as far as the pause has run
    assert job.audio.size == pytest.approx((1504 + PAUSE_MS - (512 - 100)) * SAMPLE_RATE / 1000, abs=FRAME * 2)


@pytest.mark.parametrize(("eagerness", "window"), [("high", 400), ("medium", 700), ("low", 1200)])
def test_semantic_vad_eagerness_picks_the_window(eagerness: str, window: int) -> None:
    out, _ = run(speech_between(512, 1504), 3600, {"type": "semantic_vad", "eagerness": eagerness,
                                                   "create_response": False})
    _, stopped = first(out, "input_audio_buffer.speech_stopped")
    assert abs(stopped["audio_end_ms"] - (1504 + window)) <= VAD_FRAME_MS
