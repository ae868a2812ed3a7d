"""What the session asks of the STT: the transcription prompt and language, and the final words.

Socket-free tests drive the sans-I/O session as `test_engine_session.py` does (real silero VAD on
TTS speech, the test playing the driver); `slow` ones run whisper tiny.en itself, and one goes
through the real engine with the official openai SDK. None depends on whisper hearing one hard
word exactly.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import openai
import pytest
from openai import AsyncOpenAI

from parley.apps.local import local_engine
from parley.apps.negotiator.responder import ScenarioResponder
from parley.apps.scenarios import get_persona
from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from parley.engine.app import create_app
from parley.engine.input import CAREFUL_WINDOW_MS
from parley.engine.responders.base import TextDelta
from parley.engine.session import StartResponse, Transcribe
from parley.engine.settings import EngineSettings
from parley.engine.speech import stt
from parley.protocol.session import RealtimeSessionConfig
from parley.util.serving import serve_app
from support.session import Harness, Mic, ScriptedDetector, error_of, is_type, only, speech_between, types
from support.speech import silence, speech_pcm24k

PROMPT = "Northwind Cable, Fiber Basic, Unlimited Max, Marco, Sarah, autopay, $94.99 a month."
PHRASE = "I would like to lower my monthly bill"


def transcription(window_ms: int | None = None, **fields: object) -> dict[str, object]:
    audio: dict[str, object] = {"transcription": {"model": "whisper-1", **fields}}
    if window_ms is not None:
        audio["turn_detection"] = {"type": "server_vad", "silence_duration_ms": window_ms}
    return {"audio": {"input": audio}}


# -- prompt ------------------------------------------------------------------------------------


def test_the_transcription_prompt_and_language_go_to_the_stt(make: Callable[..., Harness]) -> None:
    h = make(transcription(prompt=PROMPT, language="en"))
    job = only(Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).until(is_type("Transcribe")), "Transcribe")
    assert isinstance(job, Transcribe)
    assert (job.prompt, job.language) == (PROMPT, "en")
    # a later session.update changes what the next turn is primed with
    h.s.transcription_result(job.item_id, job.attempt, PHRASE)
    h.take()
    out = h.send({"type": "session.update", "session": {"type": "realtime", **transcription(prompt="Marco")}})
    assert types(out) == ["session.updated"]
    job = only(Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).until(is_type("Transcribe")), "Transcribe")
    assert job.prompt == "Marco"


@pytest.mark.slow
def test_the_prompt_changes_what_whisper_is_primed_with(make: Callable[..., Harness]) -> None:
    # Whisper decodes the speech after the prompt's tokens, so the same audio scores differently
    # with and without it (greedy decoding at temperature 0 is deterministic): if the prompt
    # were dropped anywhere on the way, the scores would be equal.
    scores = []
    for prompt in (None, PROMPT):
        h = make(transcription(**({"prompt": prompt} if prompt else {})))
        job = only(Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).until(is_type("Transcribe")), "Transcribe")
        result = stt.default_transcriber().transcribe(stt_input(job), job.prompt, job.language or "en")
        assert result.segments and result.text
        scores.append(tuple(s.avg_logprob for s in result.segments))
    assert scores[0] != scores[1]


def stt_input(job: Transcribe) -> object:
    """What the runtime hands the model for a Transcribe effect (16 kHz)."""
    from parley.audio.resample import resample

    return resample(job.audio, 24_000, stt.STT_RATE)


# -- language ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "param"), [
    ({"language": "fr"}, "session.audio.input.transcription.language"),
    ({"language": "en", "languages": ["en", "de"]}, "session.audio.input.transcription.languages[1]"),
])
def test_a_language_the_model_lacks_is_an_error(
        make: Callable[..., Harness], fields: dict[str, object], param: str) -> None:
    h = make(transcription(language="en"))
    before = h.s.resource()
    err = error_of(h.send({"type": "session.update", "event_id": "evt_lang",
                           "session": {"type": "realtime", **transcription(**fields)}}))
    assert (err["type"], err["code"], err["param"], err["event_id"]) == (
        "invalid_request_error", "invalid_value", param, "evt_lang")
    assert "'en'" in err["message"] and stt.MODEL_NAME in err["message"]
    assert h.s.resource() == before  # nothing changed: turns are still transcribed as English
    # English, in either spelling, and no language at all are fine
    for ok in ({"language": "EN"}, {"language": "en-US"}, {"language": None}):
        assert types(h.send({"type": "session.update", "session": {"type": "realtime", **transcription(**ok)}})) == [
            "session.updated"]


def test_the_model_languages_are_what_the_packaged_model_knows() -> None:
    assert stt.LANGUAGES == frozenset({"en"}) and stt.MODEL_NAME.endswith(".en")


@pytest.mark.slow
def test_the_packaged_model_is_english_only() -> None:
    assert stt.get_model().model.is_multilingual is (len(stt.LANGUAGES) > 1)


async def test_a_language_the_model_lacks_is_refused_through_the_sdk(engine_url: str) -> None:
    client = AsyncOpenAI(base_url=f"{engine_url}/v1", api_key="sk-local-test")
    session = {"type": "realtime", **transcription(language="ja")}
    with pytest.raises(openai.BadRequestError) as refused:  # when the session is created...
        await client.realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
    assert refused.value.code == "invalid_value"
    assert refused.value.param == "session.audio.input.transcription.language"
    async with client.realtime.connect(model="gpt-realtime") as conn:  # ...and when it is updated
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=session)  # type: ignore[arg-type]
        event = await conn.recv()
        assert event.type == "error"
        assert (event.error.code, event.error.param) == ("invalid_value", "session.audio.input.transcription.language")


# -- a careful pass when the quick one was unsure ---------------------------------------------

# Below CAREFUL_WINDOW_MS a turn gets the quick pass first, and the careful one only if unsure.
SHORT_WINDOW_MS = 200
HEARD_QUICKLY = "Can I speak to your super minor?"
HEARD_CAREFULLY = "Can I speak to your supervisor?"


async def answer(start: StartResponse) -> str:
    """What the engine's scripted responder (Sarah) says to the request the session built."""
    chunks = [c async for c in ScenarioResponder().respond(start.request)]
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def tone(*spans_s: tuple[float, float], total_s: float = 3.0) -> np.ndarray:
    """A 220 Hz tone over the given spans: what a ScriptedDetector of the same spans calls speech."""
    t = np.arange(int(SAMPLE_RATE * total_s)) / SAMPLE_RATE
    on = np.zeros(t.size, dtype=bool)
    for start, end in spans_s:
        on |= (t > start) & (t <= end)
    return np.where(on, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)


async def test_an_unsure_quick_transcript_is_replaced_by_the_careful_pass(make: Callable[..., Harness]) -> None:
    # A scripted detector: one unbroken utterance (espeak's real one may pause where silero hears a
    # second turn, depending on what espeak said before in this process).
    h = make({**transcription(SHORT_WINDOW_MS, language="en"),
              "instructions": get_persona("negotiator/sarah").instructions},
             detector=ScriptedDetector(speech_between(320, 1600)))
    mic = Mic(h, tone((0.32, 1.6)))
    quick = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert not quick.careful
    # the quick pass in the silence window doubts a word: the session asks for a careful pass of
    # the same audio and says nothing yet
    h.s.transcription_result(quick.item_id, quick.attempt, HEARD_QUICKLY, sure=False)
    out = h.take()
    careful = only(out, "Transcribe")
    assert types(out) == ["Transcribe"]
    assert careful.careful and (careful.item_id, careful.attempt) == (quick.item_id, quick.attempt)
    assert careful.audio is quick.audio and (careful.prompt, careful.language) == (quick.prompt, quick.language)
    # the turn ends while the careful pass runs: the response waits for its words
    got = mic.until(is_type("input_audio_buffer.speech_stopped"))
    assert "StartResponse" not in types(got)
    assert "conversation.item.input_audio_transcription.completed" not in types(got)
    h.s.transcription_result(careful.item_id, careful.attempt, HEARD_CAREFULLY)
    out = h.take()
    assert types(out) == ["conversation.item.input_audio_transcription.delta",
                          "conversation.item.input_audio_transcription.completed",
                          "conversation.item.done", "StartResponse"]
    assert out[1]["transcript"] == HEARD_CAREFULLY
    assert out[2]["item"]["content"][0]["transcript"] == HEARD_CAREFULLY
    start = out[3]
    assert start.request.items[-1]["content"][0]["transcript"] == HEARD_CAREFULLY
    # the responder answers the final words: Sarah hands over to her supervisor (to the quick
    # pass's words she would have said she did not get that)
    reply = await answer(start)
    assert "Marco" in reply
    assert "Marco" not in await answer(replace(start, request=replace(start.request, items=[
        {**start.request.items[-1], "content": [{"type": "input_audio", "transcript": HEARD_QUICKLY}]}])))


def test_a_sure_quick_transcript_is_final(make: Callable[..., Harness]) -> None:
    h = make(transcription(SHORT_WINDOW_MS))
    mic = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500))
    quick = only(mic.until(is_type("Transcribe")), "Transcribe")
    h.s.transcription_result(quick.item_id, quick.attempt, PHRASE, sure=True)
    assert h.take() == []
    got = mic.until(is_type("StartResponse"))
    assert only(got, "conversation.item.input_audio_transcription.completed")["transcript"] == PHRASE
    assert "Transcribe" not in types(got)


def test_a_failed_careful_pass_leaves_the_quick_words(make: Callable[..., Harness]) -> None:
    h = make(transcription(SHORT_WINDOW_MS))
    mic = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500))
    quick = only(mic.until(is_type("Transcribe")), "Transcribe")
    h.s.transcription_result(quick.item_id, quick.attempt, PHRASE, sure=False)
    careful = only(h.take(), "Transcribe")
    h.s.transcription_result(careful.item_id, careful.attempt, None, error="the model failed")
    out = mic.until(is_type("StartResponse"))
    assert only(out, "conversation.item.input_audio_transcription.completed")["transcript"] == PHRASE


def test_an_unsure_quick_pass_too_late_for_a_careful_one_stands(make: Callable[..., Harness]) -> None:
    # the quick pass took most of the short window: a careful pass (CAREFUL_COST times as long)
    # would end after it, and only make the answer later
    h = make(transcription(SHORT_WINDOW_MS), detector=ScriptedDetector(speech_between(320, 1600)))
    mic = Mic(h, tone((0.32, 1.6)))
    quick = only(mic.until(is_type("Transcribe")), "Transcribe")
    h.s.receive_audio(silence(60))  # session time the quick pass took
    assert h.take() == []
    h.s.transcription_result(quick.item_id, quick.attempt, HEARD_QUICKLY, sure=False)
    assert h.take() == []  # no careful pass asked for
    got = mic.until(is_type("StartResponse"))
    assert only(got, "conversation.item.input_audio_transcription.completed")["transcript"] == HEARD_QUICKLY
    assert "Transcribe" not in types(got)
    # and after the turn, an unsure quick pass (a late speculative one) is final at once
    h2 = make(transcription(SHORT_WINDOW_MS), detector=ScriptedDetector(speech_between(320, 1600)))
    mic2 = Mic(h2, tone((0.32, 1.6)))
    got = mic2.until(is_type("input_audio_buffer.speech_stopped"))
    late = only(got, "Transcribe")
    h2.s.transcription_result(late.item_id, late.attempt, HEARD_QUICKLY, sure=False)
    out = h2.take()
    assert "Transcribe" not in types(out) and "StartResponse" in types(out)


def test_a_committed_turn_waits_for_the_careful_pass(make: Callable[..., Harness]) -> None:
    # push to talk: no silence window to fit in, and the client waits for the words anyway
    h = make({"audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}}})
    h.s.receive_audio(speech_pcm24k(PHRASE))
    h.take()
    quick = only(h.send({"type": "input_audio_buffer.commit"}), "Transcribe")
    assert not quick.careful
    h.s.transcription_result(quick.item_id, quick.attempt, HEARD_QUICKLY, sure=False)
    careful = only(h.take(), "Transcribe")
    assert careful.careful and careful.audio is quick.audio
    h.s.transcription_result(careful.item_id, careful.attempt, HEARD_CAREFULLY)
    assert only(h.take(), "conversation.item.input_audio_transcription.completed")["transcript"] == HEARD_CAREFULLY


def test_speech_resuming_drops_the_careful_pass(make: Callable[..., Harness]) -> None:
    # a pause shorter than the window, long enough for the speculative pass to start
    h = make(transcription(SHORT_WINDOW_MS), detector=ScriptedDetector(
        lambda t: 0.9 if 320 < t <= 1600 or 1730 < t <= 2400 else 0.05))
    mic = Mic(h, tone((0.32, 1.6), (1.73, 2.4)))
    quick = only(mic.until(is_type("Transcribe")), "Transcribe")
    h.s.transcription_result(quick.item_id, quick.attempt, "I would like to book a", sure=False)
    stale = only(h.take(), "Transcribe")
    assert stale.careful
    got = mic.until(is_type("input_audio_buffer.speech_stopped"))
    fresh = [o for o in got if isinstance(o, Transcribe)][-1]
    assert fresh.attempt > stale.attempt and not fresh.careful
    h.s.transcription_result(stale.item_id, stale.attempt, "I would like to book a table")  # too late: ignored
    assert h.take() == []
    h.s.transcription_result(fresh.item_id, fresh.attempt, "I would like to book a table for two people tonight")
    out = h.take()
    assert types(out) == ["conversation.item.input_audio_transcription.delta",
                          "conversation.item.input_audio_transcription.completed",
                          "conversation.item.done", "StartResponse"]
    assert out[1]["transcript"].endswith("tonight")


@pytest.mark.parametrize("window_ms", [CAREFUL_WINDOW_MS, 500, 900])
def test_a_long_silence_window_gets_the_careful_pass_straight_away(
        make: Callable[..., Harness], window_ms: int) -> None:
    # with no pass timed yet the window is taken to leave time for the careful pass, so the
    # speculative cut gets it, and its words are final: no quick pass, no second job
    h = make(transcription(window_ms), detector=ScriptedDetector(speech_between(320, 1600)))
    mic = Mic(h, tone((0.32, 1.6)))
    job = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert job.careful
    h.s.transcription_result(job.item_id, job.attempt, HEARD_CAREFULLY)
    assert h.take() == []
    got = mic.until(is_type("StartResponse"))
    assert only(got, "conversation.item.input_audio_transcription.completed")["transcript"] == HEARD_CAREFULLY
    assert "Transcribe" not in types(got)


TURNS_S = ((0.32, 1.6), (2.4, 3.7), (4.5, 5.8))


def three_turns(make: Callable[..., Harness], window_ms: int) -> tuple[Harness, Mic]:
    """Three turns a second apart, with no responses (each turn's transcript is what is looked at)."""
    h = make({"audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": {
        "type": "server_vad", "silence_duration_ms": window_ms, "create_response": False}}}},
        detector=ScriptedDetector(lambda t: 0.9 if any(a * 1000 < t <= b * 1000 for a, b in TURNS_S) else 0.05))
    return h, Mic(h, tone(*TURNS_S, total_s=7.0))


def test_a_careful_pass_too_slow_for_the_window_gives_way_to_the_quick_one(make: Callable[..., Harness]) -> None:
    # On a slow or busy machine the careful pass took longer than the whole 500 ms window: the
    # next turn's cut gets the quick pass, so its answer is not late, and sure quick words are final.
    h, mic = three_turns(make, 500)
    first = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert first.careful  # nothing timed yet: the window is taken to leave time for it
    h.s.transcription_result(first.item_id, first.attempt, PHRASE, took_ms=900)
    mic.until(is_type("conversation.item.input_audio_transcription.completed"))
    second = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert second.item_id != first.item_id and not second.careful
    h.s.transcription_result(second.item_id, second.attempt, HEARD_CAREFULLY, sure=True, took_ms=300)
    got = mic.until(is_type("conversation.item.input_audio_transcription.completed"))
    assert only(got, "conversation.item.input_audio_transcription.completed")["transcript"] == HEARD_CAREFULLY
    assert "Transcribe" not in types(got)
    # a quick pass predicts a careful one at CAREFUL_COST times its time (480 ms here, with the
    # 900 ms before it): still too slow for the window, so the third turn gets the quick pass too
    third = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert not third.careful


def test_a_fast_machine_gets_the_careful_pass_at_once_in_a_short_window(make: Callable[..., Harness]) -> None:
    # Below CAREFUL_WINDOW_MS the first turn gets the quick pass; once a pass has been timed and a
    # careful one fits in what is left of the 200 ms window, the cut gets the careful pass at once.
    h, mic = three_turns(make, SHORT_WINDOW_MS)
    first = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert not first.careful
    h.s.transcription_result(first.item_id, first.attempt, PHRASE, sure=True, took_ms=20)
    mic.until(is_type("conversation.item.input_audio_transcription.completed"))
    second = only(mic.until(is_type("Transcribe")), "Transcribe")
    assert second.careful
    h.s.transcription_result(second.item_id, second.attempt, HEARD_CAREFULLY, took_ms=30)
    got = mic.until(is_type("conversation.item.input_audio_transcription.completed"))
    assert only(got, "conversation.item.input_audio_transcription.completed")["transcript"] == HEARD_CAREFULLY
    assert "Transcribe" not in types(got)


async def test_a_new_session_starts_from_what_the_last_one_timed() -> None:
    # Through the real engine (the runtime times whisper's passes): a call's first turn on a slow
    # machine does not wait for a careful pass that did not fit the last call's window.
    engine = local_engine(EngineSettings(api_keys=[], responder="scenario"))
    with serve_app(create_app(engine)) as url:
        assert engine.careful_ms() is None
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-local-test")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session={"type": "realtime", **transcription(500)})  # type: ignore[arg-type]
            # silence, committed by hand: the level gate answers without the model, which says
            # nothing of what a pass costs
            await conn.input_audio_buffer.append(audio=base64.b64encode(float_to_pcm16(silence(300))).decode())
            await conn.input_audio_buffer.commit()
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.completed":
                    assert event.transcript == ""
                    break
            assert engine.careful_ms() is None
            pcm = float_to_pcm16(speech_pcm24k(PHRASE, tail_silence_ms=1500))
            for off in range(0, len(pcm), 9600):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[off : off + 9600]).decode())
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.completed":
                    break
            timed = engine.careful_ms()
            assert timed is not None and timed > 0
        async with asyncio.timeout(10):
            # the engine forgets the session once its socket has closed (on the server's thread
            # and event loop, so its own idle event is not ours to wait on)
            while engine.runners:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert engine.careful_ms() == timed
        assert engine.new_session(RealtimeSessionConfig()).careful_ms == timed


@pytest.mark.slow
def test_the_quick_pass_says_when_it_is_unsure() -> None:
    audio = stt_input(Transcribe("item", 1, speech_pcm24k(PHRASE), "en", None))
    # every decoded word has a log-probability below 0 and far above -10
    assert not stt.Transcriber(encoder_window_s=15, sure_logprob=0.0).transcribe(audio).sure
    assert stt.Transcriber(encoder_window_s=15, sure_logprob=-10.0).transcribe(audio).sure
    assert stt.Transcriber(encoder_window_s=15).transcribe(audio).sure  # no threshold: never a second pass
    quick, careful = stt.default_transcriber(), stt.careful_transcriber()
    assert quick.sure_logprob == stt.SURE_LOGPROB and quick.beam_size == 1
    assert careful.encoder_window_s == quick.encoder_window_s and (careful.beam_size, careful.sure_logprob) == (5, None)


@pytest.mark.slow
def test_the_careful_pass_hears_the_same_audio_the_same_way() -> None:
    # A repeated word makes whisper's greedy decode repetitive (compression ratio over 2.4),
    # which is when a sampled temperature fallback would run: its samples differed from one
    # run to the next. The careful pass does not sample, so its words and scores repeat.
    audio = stt_input(Transcribe("item", 1, speech_pcm24k(", ".join(["bill"] * 14)), "en", None))
    careful = stt.careful_transcriber()
    runs = {tuple((s.text, s.avg_logprob, s.compression_ratio) for s in careful.transcribe(audio).segments)
            for _ in range(4)}
    assert len(runs) == 1
    assert careful.temperatures == stt.CAREFUL_TEMPERATURES == (0.0,)
