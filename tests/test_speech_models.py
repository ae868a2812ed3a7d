"""The local speech models, for real: espeak-ng TTS, silero VAD, whisper tiny.en STT, and WER.

TTS speech is the input for the VAD and STT tests, checked by WER bounds and timing
tolerances, never by comparing audio sample for sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time

import numpy as np
import pytest

from parley.audio.levels import dbfs
from parley.audio.pcm import SAMPLE_RATE
from parley.audio.resample import resample
from parley.engine.speech import stt
from parley.engine.speech.tts import VOICES, Tts, speed_to_prosody, voice_spec
from parley.engine.speech.vad import FRAME_MS, VadStream, idle_models
from parley.engine.speech.wer import edit_distance, normalize, wer
from support.speech import silence, speech_bounds_ms, speech_pcm16k, speech_pcm24k

BILL_SENTENCES = [
    "I would like to lower my monthly bill.",
    "I have been a customer for six years.",
    "Another company offered me internet for fifty dollars a month.",
    "If you cannot help me I will cancel my service.",
]
TEXT = "I would like to lower my monthly bill. I have been a customer for six years."


@pytest.fixture(scope="module")
def tts() -> Tts:
    return Tts()


def ltas_db(x: np.ndarray, rate: int = 24000) -> np.ndarray:
    """Long-term average spectrum of the voiced frames in 20 log bands, mean-removed (timbre)."""
    n = 2048
    frames = x[: x.size // n * n].reshape(-1, n)
    frames = frames[np.sqrt((frames**2).mean(axis=1)) > 0.01] * np.hanning(n)
    spec = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    f = np.fft.rfftfreq(n, 1 / rate)
    edges = np.geomspace(150, 8000, 21)
    bands = np.array([spec[(f >= lo) & (f < hi)].mean() for lo, hi in itertools.pairwise(edges)])
    db = 10 * np.log10(bands + 1e-12)
    return db - db.mean()


# ------------------------------------------------------------------ TTS


def test_tts_makes_plausible_speech(tts: Tts) -> None:
    chunks = list(tts.synthesize(TEXT))
    assert len(chunks) > 10  # streamed in pieces, not one blob
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    audio = np.concatenate(chunks)
    seconds = audio.size / 24000
    words = len(TEXT.split())
    assert 2.0 <= words / seconds <= 5.0  # 175 wpm is ~2.9 words/s plus pauses
    assert -30 < dbfs(audio) < -10
    assert np.abs(audio).max() <= 1.0


def test_tts_voices_are_distinct(tts: Tts) -> None:
    spectra = {v: ltas_db(tts.synthesize_all(TEXT, v)) for v in VOICES}
    assert len({voice_spec(v) for v in VOICES}) == len(VOICES)
    # the same voice twice differs only by espeak's jitter...
    same = max(
        float(np.sqrt(np.mean((ltas_db(tts.synthesize_all(TEXT, v)) - spectra[v]) ** 2)))
        for v in ("alloy", "onyx")
    )
    # ...while every pair of voices differs in timbre by several times that
    closest = min(
        float(np.sqrt(np.mean((spectra[a] - spectra[b]) ** 2))) for a, b in itertools.combinations(VOICES, 2)
    )
    assert closest > 1.5
    assert closest > 2 * same


def test_unknown_voice_falls_back_to_alloy(tts: Tts) -> None:
    assert voice_spec("no-such-voice") == voice_spec("alloy") == voice_spec(None)
    assert voice_spec(" Coral ") == VOICES["coral"]
    a = ltas_db(tts.synthesize_all(TEXT, "no-such-voice"))
    assert float(np.sqrt(np.mean((a - ltas_db(tts.synthesize_all(TEXT, "alloy"))) ** 2))) < 1.0


def test_tts_speed(tts: Tts) -> None:
    durations = {s: tts.synthesize_all(TEXT, speed=s).size for s in (0.25, 0.5, 1.0, 1.5)}
    assert durations[0.25] > durations[0.5] > durations[1.0] > durations[1.5]
    assert 1.7 < durations[0.5] / durations[1.0] < 2.4
    assert 1.2 < durations[1.0] / durations[1.5] < 1.8
    assert speed_to_prosody(1.0) == (175, 0)
    assert speed_to_prosody(9.0) == speed_to_prosody(1.5) == (262, 0)
    assert speed_to_prosody(0.1)[0] == 80 and speed_to_prosody(0.25)[1] > 0


def test_tts_empty_text(tts: Tts) -> None:
    assert tts.synthesize_all("   ").size == 0


def test_closing_the_generator_aborts_synthesis(tts: Tts) -> None:
    long_text = " ".join([TEXT] * 150)  # ~10 minutes of speech, ~1 s to synthesize in full
    t0 = time.perf_counter()
    gen = tts.synthesize(long_text)
    next(gen)
    gen.close()
    # If synthesis had not stopped, the worker would still be busy with 10 minutes of audio
    # and this short request would queue behind it.
    first = next(iter(tts.synthesize("Hello.")))
    assert first.size > 0
    assert time.perf_counter() - t0 < 0.3


async def test_stream_yields_first_chunk_fast_and_aborts_on_break(tts: Tts) -> None:
    long_text = " ".join([TEXT] * 150)
    t0 = time.perf_counter()
    got = 0
    async with contextlib.aclosing(tts.stream(long_text, "coral")) as chunks:
        async for chunk in chunks:
            if got == 0:
                assert time.perf_counter() - t0 < 0.1  # measured ~1 ms
            got += chunk.size
            if got > 24000:
                break
    t1 = time.perf_counter()
    pieces = [c async for c in tts.stream("Short one.", "coral")]
    assert sum(p.size for p in pieces) > 0
    assert time.perf_counter() - t1 < 0.2


async def test_stream_cancelled_consumer_aborts(tts: Tts) -> None:
    long_text = " ".join([TEXT] * 150)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in tts.stream(long_text):
            started.set()
            await asyncio.sleep(10)  # a slow consumer, e.g. paced playback

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = time.perf_counter()
    assert (await asyncio.to_thread(tts.synthesize_all, "Next turn.")).size > 0
    assert time.perf_counter() - t0 < 0.3


def test_tts_is_safe_from_many_threads(tts: Tts) -> None:
    results: dict[str, int] = {}

    def work(voice: str) -> None:
        results[voice] = tts.synthesize_all("Thread safety check.", voice).size

    threads = [threading.Thread(target=work, args=(v,)) for v in ("alloy", "ash", "coral", "onyx")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(n > 12000 for n in results.values()) and len(results) == 4


# ------------------------------------------------------------------ VAD


def run_vad(audio: np.ndarray, chunk: int = 480) -> tuple[np.ndarray, np.ndarray]:
    with VadStream() as vad:
        out = [p for i in range(0, audio.size, chunk) for p in vad.feed(audio[i : i + chunk])]
    return np.array([e for e, _ in out]), np.array([p for _, p in out])


def test_vad_high_in_speech_low_in_silence() -> None:
    lead = 1000
    audio = speech_pcm24k(TEXT, lead_silence_ms=lead, tail_silence_ms=1500)
    audio = audio + (np.random.default_rng(0).standard_normal(audio.size) * 0.003).astype(
        np.float32
    )  # -50 dBFS hiss
    ends, probs = run_vad(audio)
    assert ends.size == int(audio.size / 24000 * 1000 // FRAME_MS)
    np.testing.assert_allclose(np.diff(ends), FRAME_MS)
    start, end = speech_bounds_ms(TEXT, lead_silence_ms=lead)
    inside = probs[(ends - FRAME_MS > start + 100) & (ends < end - 100)]
    outside = probs[(ends < start - 100) | (ends - FRAME_MS > end + 300)]
    assert np.median(inside) > 0.9 and np.mean(inside > 0.5) > 0.85
    assert outside.max() < 0.2


@pytest.mark.parametrize("voice", ["alloy", "onyx"])
def test_vad_segment_boundaries_within_150ms(voice: str) -> None:
    text = "I want to cancel my service."
    lead = 700
    audio = speech_pcm24k(text, voice, lead_silence_ms=lead, tail_silence_ms=1200)
    ends, probs = run_vad(audio)
    speech = np.flatnonzero(probs >= 0.5)
    detected_start, detected_end = ends[speech[0]] - FRAME_MS, ends[speech[-1]]
    true_start, true_end = speech_bounds_ms(text, voice, lead_silence_ms=lead)
    assert abs(detected_start - true_start) < 150
    assert abs(detected_end - true_end) < 150


def test_vad_result_does_not_depend_on_chunking() -> None:
    audio = speech_pcm24k("Can you give me a discount?", tail_silence_ms=300)
    e1, p1 = run_vad(audio, chunk=480)
    e2, p2 = run_vad(audio, chunk=7)
    e3, p3 = run_vad(audio, chunk=audio.size)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(e1, e3)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(p1, p3, atol=1e-5)


def test_vad_streams_keep_separate_state_and_reset() -> None:
    speech = speech_pcm24k("Hello there, I need help.", lead_silence_ms=100, tail_silence_ms=200)
    quiet = silence(speech.size / 24)
    ref_speech, ref_quiet = run_vad(speech)[1], run_vad(quiet)[1]
    a, b = VadStream(), VadStream()
    pa, pb = [], []
    for i in range(0, speech.size, 480):  # interleave two sessions
        pa += [p for _, p in a.feed(speech[i : i + 480])]
        pb += [p for _, p in b.feed(quiet[i : i + 480])]
    np.testing.assert_allclose(pa, ref_speech, atol=1e-5)
    np.testing.assert_allclose(pb, ref_quiet, atol=1e-5)
    a.reset()
    assert a.elapsed_ms == 0
    again = [p for i in range(0, speech.size, 480) for _, p in a.feed(speech[i : i + 480])]
    np.testing.assert_allclose(again, ref_speech, atol=1e-5)
    a.close()
    b.close()
    with pytest.raises(RuntimeError):
        a.feed(speech[:480])
    # a pooled model comes back clean
    np.testing.assert_allclose(run_vad(speech)[1], ref_speech, atol=1e-5)


def test_vad_at_16k_input() -> None:
    audio = resample(speech_pcm24k(TEXT, lead_silence_ms=500), 24000, 16000)
    with VadStream(sample_rate=16000) as vad:
        probs = [p for _, p in vad.feed(audio)]
    assert max(probs) > 0.9 and probs[0] < 0.2


# ------------------------------------------------------------------ WER


def test_normalize() -> None:
    assert normalize("$79") == normalize("seventy nine dollars") == normalize("79 dollars") == "79"
    assert normalize("$79/mo") == normalize("Seventy-nine dollars per month.") == "79 a month"
    assert normalize("I'm sure you CAN'T; it's fine, don't!") == "i am sure you cannot it is fine do not"
    assert normalize("I can not") == "i cannot"
    assert normalize("one hundred and twenty five") == "125"
    assert normalize("a hundred dollars") == normalize("$100")
    assert normalize("two thousand twenty four") == "2024"
    assert normalize("nineteen eighty four") == "19 84"  # not summed into 103
    assert normalize("$1,200.50") == "1200.50"
    assert normalize("10%") == normalize("ten percent") == "10 percent"
    assert normalize("  lots   of\tspace ") == "lots of space"
    assert normalize("I have been a customer for six years.") == "i have been a customer for 6 years"


def test_wer() -> None:
    assert (
        wer(
            "Another company offered me internet for fifty dollars a month.",
            "another company offered me internet for $50 a month",
        )
        == 0.0
    )
    assert wer("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert wer("", "") == 0.0
    assert wer("", "two words") == 2.0
    assert wer("Hello", "hello", normalize_text=False) == 1.0
    assert edit_distance(list("kitten"), list("sitting")) == 3


# ------------------------------------------------------------------ STT


@pytest.fixture(scope="module")
def transcriber() -> stt.Transcriber:
    return stt.Transcriber()


@pytest.mark.slow
async def test_stt_transcribes_bill_sentences(transcriber: stt.Transcriber) -> None:
    # All four submitted at once: they queue on the single STT thread.
    results = await asyncio.gather(*(transcriber.transcribe_async(speech_pcm16k(s)) for s in BILL_SENTENCES))
    errors = sum(
        wer(s, r.text) * len(normalize(s).split()) for s, r in zip(BILL_SENTENCES, results, strict=True)
    )
    words = sum(len(normalize(s).split()) for s in BILL_SENTENCES)
    detail = [r.text for r in results]
    assert errors / words <= 0.15, detail
    assert all(
        abs(r.duration_s - speech_pcm16k(s).size / 16000) < 1e-6
        for s, r in zip(BILL_SENTENCES, results, strict=True)
    )


@pytest.mark.slow
def test_stt_silence_and_noise_give_nothing(transcriber: stt.Transcriber) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(3 * 16000) / 16000
    cases = {
        "digital silence": np.zeros(3 * 16000, dtype=np.float32),
        "room tone": (rng.standard_normal(3 * 16000) * 0.0005).astype(np.float32),
        "white noise": (rng.standard_normal(3 * 16000) * 0.03).astype(np.float32),
        "mains hum": (0.03 * np.sin(2 * np.pi * 50 * t)).astype(np.float32),
    }
    for name, audio in cases.items():
        result = transcriber.transcribe(audio)
        assert result.text == "", (name, result)
    # the level gate answers silence without running the model at all
    assert transcriber.transcribe(cases["room tone"]).processing_s == 0.0


@pytest.mark.slow
def test_stt_keeps_real_short_turns(transcriber: stt.Transcriber) -> None:
    # "Thank you." is whisper's favourite hallucination, but said clearly it is a real turn.
    result = transcriber.transcribe(speech_pcm16k("Thank you.", "onyx", tail_silence_ms=500))
    assert normalize(result.text) == "thank you", result


def test_hallucination_phrases() -> None:
    assert stt.is_known_hallucination(" Thank you.")
    assert stt.is_known_hallucination("We will see you in the next video.")
    assert stt.is_known_hallucination("Subtitles by the Amara.org community")
    assert not stt.is_known_hallucination("Thank you, that sounds good to me.")
    assert stt.peak_window_dbfs(np.zeros(1600, dtype=np.float32)) == -120.0


@pytest.mark.slow
def test_stt_model_is_a_process_singleton() -> None:
    models: list[object] = []
    threads = [threading.Thread(target=lambda: models.append(stt.get_model())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m is models[0] for m in models)


@pytest.mark.slow
async def test_stt_cancelled_queued_job_never_runs(transcriber: stt.Transcriber) -> None:
    clip = speech_pcm16k("If you cannot help me I will cancel my service.")
    first = asyncio.ensure_future(transcriber.transcribe_async(clip))
    second = asyncio.ensure_future(transcriber.transcribe_async(clip))
    await asyncio.sleep(0.05)  # first is running, second waits in the queue
    second.cancel()
    result = await first
    assert "cancel my service" in normalize(result.text)
    with pytest.raises(asyncio.CancelledError):
        await second
    # Silence is answered by the level gate instantly; had the cancelled job run, this would
    # have waited ~0.5 s behind it.
    t0 = time.perf_counter()
    await transcriber.transcribe_async(np.zeros(16000, dtype=np.float32))
    assert time.perf_counter() - t0 < 0.2


@pytest.mark.slow
def test_stt_short_encoder_window(transcriber: stt.Transcriber) -> None:
    fast = stt.Transcriber(encoder_window_s=15.0)
    assert fast._encode_frames(16000 * 2) == 1500 and fast._encode_frames(16000 * 20) == 2100
    assert fast._encode_frames(16000 * 29) is None and transcriber._encode_frames(16000) is None
    text = "If you cannot help me I will cancel my service."
    result = fast.transcribe(speech_pcm16k(text))
    assert wer(text, result.text) <= 0.2, result


def test_vad_pool_tops_itself_up_in_the_background() -> None:
    # A burst of sessions drains the pool; the next ones must not each build a model (~40 ms) on
    # the event loop.
    streams = [VadStream() for _ in range(idle_models() + 1)]
    try:
        deadline = time.monotonic() + 10
        while idle_models() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert idle_models() >= 2
    finally:
        for stream in streams:
            stream.close()


def test_whisper_runs_below_the_event_loop_priority() -> None:
    # Whisper has the silence window to finish in, a call's audio 20 ms: under load the scheduler
    # must prefer the event loop. CTranslate2's own threads inherit this from the thread that
    # built the model.
    import os

    stt.warm_up()
    native_id = stt._executor.submit(threading.get_native_id).result()
    assert os.getpriority(os.PRIO_PROCESS, native_id) == os.getpriority(os.PRIO_PROCESS, 0) + stt.STT_NICE


def test_vad_skips_quiet_frames_and_hears_speech_after_them() -> None:
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(SAMPLE_RATE) * 1e-4).astype(np.float32)  # ~ -80 dBFS
    speech = speech_pcm24k("What does that offer include?", lead_silence_ms=0, tail_silence_ms=0)
    with VadStream() as vad:
        quiet = vad.feed(hiss)
        loud = vad.feed(speech)
    assert quiet and all(p == 0.0 for _, p in quiet)  # no model call for them
    assert max(p for _, p in loud) > 0.9
