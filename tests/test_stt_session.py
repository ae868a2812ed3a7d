"""What the session asks of the STT: the transcription prompt and language, and the final words.

Socket-free tests drive the sans-I/O session as `test_engine_session.py` does (real silero VAD on
TTS speech, the test playing the driver); `slow` ones run whisper tiny.en itself, and one goes
through the real engine with the official openai SDK. None depends on whisper hearing one hard
word exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
from openai import AsyncOpenAI

from parley.engine.session import Transcribe
from parley.engine.speech import stt
from speechfixtures import speech_pcm24k
from test_engine_session import Harness, Mic, error_of, is_type, make, only, types

__all__ = ["make"]  # the fixture

PROMPT = "Northwind Cable, Fiber Basic, Unlimited Max, Marco, Sarah, autopay, $94.99 a month."
PHRASE = "I would like to lower my monthly bill"


def transcription(**fields: object) -> dict[str, object]:
    return {"audio": {"input": {"transcription": {"model": "whisper-1", **fields}}}}


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
