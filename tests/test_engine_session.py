"""The engine's sans-I/O session, driven directly: the test plays the driver's part.

Client events go in through `receive`, microphone audio through `receive_audio` (real speech
from our TTS; the VAD inside the session is the real silero model), and the results of the
effects it asks for (transcripts, the responder's text and speech, playback progress) are fed
back by hand. Every server event that comes out is validated strictly against the openai SDK,
and must stay as it was when it was taken: events are snapshots, whatever the session does
later (the runtime serialises them asynchronously).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from parley.audio import g711
from parley.audio.levels import loud_until
from parley.audio.pcm import SAMPLE_RATE, FloatArray, float_to_int16, float_to_pcm16
from parley.audio.resample import resample
from parley.engine.session import (
    CancelResponse,
    ClearPlayback,
    StartResponse,
    Transcribe,
)
from parley.protocol.session import TranscriptionSessionConfig
from support.session import Harness, Mic, Out, all_of, error_of, is_type, only, types
from support.speech import silence, speech_bounds_ms, speech_pcm24k

Event = dict[str, Any]

PHRASE = "What is the weather like in Paris today"
SHORT = "Hello there"


def b64_pcm16(pcm: FloatArray) -> str:
    return base64.b64encode(float_to_pcm16(pcm)).decode()


def tone(ms: float, amplitude: float = 0.3) -> FloatArray:
    t = np.arange(round(ms * SAMPLE_RATE / 1000)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def user_text(text: str, item_id: str | None = None) -> Event:
    item: Event = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    return item


def add_item(h: Harness, item: Event, **kw: Any) -> Event:
    out = h.send({"type": "conversation.item.create", "item": item, **kw})
    assert types(out) == ["conversation.item.added", "conversation.item.done"], types(out)
    added: Event = out[0]["item"]
    return added


def start_response(h: Harness, response: Event | None = None) -> tuple[str, StartResponse]:
    out = h.send({"type": "response.create", **({"response": response} if response is not None else {})})
    assert types(out) == ["response.created", "rate_limits.updated", "StartResponse"], types(out)
    start = out[2]
    assert isinstance(start, StartResponse)
    return start.response_id, start


def usage_consistent(usage: dict[str, Any]) -> None:
    itd, otd = usage["input_token_details"], usage["output_token_details"]
    assert usage["input_tokens"] == itd["text_tokens"] + itd["audio_tokens"] + itd["image_tokens"]
    assert usage["output_tokens"] == otd["text_tokens"] + otd["audio_tokens"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    ctd = itd["cached_tokens_details"]
    assert itd["cached_tokens"] == ctd["text_tokens"] + ctd["audio_tokens"] + ctd["image_tokens"]
    assert itd["cached_tokens"] <= usage["input_tokens"]


def delta_bytes(outs: list[Out]) -> int:
    return sum(len(base64.b64decode(o["delta"])) for o in all_of(outs, "response.output_audio.delta"))


def spoken_answer(h: Harness, pieces: list[tuple[str, float]], complete: bool = True) -> tuple[str, str]:
    """A response speaking `pieces` (text, ms of audio each); returns (response id, item id)."""
    rid, _ = start_response(h)
    for i, (text, ms) in enumerate(pieces):
        h.s.response_text(rid, text if i == 0 else " " + text)
        h.s.response_audio(rid, tone(ms), piece=text)
    if complete:
        h.s.response_complete(rid)
    out = h.take()
    return rid, only(out, "response.output_item.added")["item"]["id"]


TWO_PIECES = [("Hello there.", 1000), ("How are you doing today?", 2000)]


MANUAL = {"audio": {"input": {"turn_detection": None}}}


# -- start and session.update ------------------------------------------------------------------


def test_start_announces_the_session(make: Callable[..., Harness]) -> None:
    h = make(start=False)
    h.s.start()
    (created,) = h.take()
    assert isinstance(created, dict)
    session = created["session"]
    assert session == h.s.resource()
    assert session["id"] == h.s.id and session["id"].startswith("sess_")
    assert session["object"] == "realtime.session" and session["type"] == "realtime"
    assert session["expires_at"] == h.s.expires_at
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["output_modalities"] == ["audio"]


def test_announce_conversation_adds_conversation_created(make: Callable[..., Harness]) -> None:
    h = make(start=False)
    h.s.start(announce_conversation=True)
    out = h.take()
    assert types(out) == ["session.created", "conversation.created"]
    assert out[1]["conversation"] == {"id": h.s.conversation_id, "object": "realtime.conversation"}
    assert h.s.conversation_id.startswith("conv_")


def test_session_update_merges_and_answers_with_the_full_session(make: Callable[..., Harness]) -> None:
    h = make()
    before = h.s.resource()
    out = h.send({"type": "session.update", "event_id": "evt_up",
                  "session": {"type": "realtime", "instructions": "Be terse.",
                              "audio": {"output": {"voice": "marin"},
                                        "input": {"turn_detection": {"silence_duration_ms": 700}}}}})
    assert types(out) == ["session.updated"]
    session = out[0]["session"]
    assert "evt_up" not in json.dumps(out[0])  # success replies do not echo the client's event_id
    assert session == h.s.resource()
    assert session["instructions"] == "Be terse."
    assert session["audio"]["output"]["voice"] == "marin"
    td = session["audio"]["input"]["turn_detection"]
    assert td["silence_duration_ms"] == 700
    # the rest of the object is merged, not replaced
    assert td["type"] == "server_vad" and td["threshold"] == before["audio"]["input"]["turn_detection"]["threshold"]
    assert session["audio"]["output"]["format"] == before["audio"]["output"]["format"]
    for key in ("id", "expires_at", "model", "tools", "tool_choice", "max_output_tokens", "output_modalities"):
        assert session[key] == before[key]
    # a later update keeps what the first one set
    out = h.send({"type": "session.update", "session": {"type": "realtime", "tool_choice": "none"}})
    session = out[0]["session"]
    assert session["tool_choice"] == "none" and session["instructions"] == "Be terse."
    assert session["audio"]["output"]["voice"] == "marin"


@pytest.mark.parametrize(
    ("patch", "code", "param"),
    [
        ({"type": "realtime", "audio": {"output": {"speed": 3.0}}}, "invalid_value", "session.audio.output.speed"),
        ({"type": "realtime", "instructions": 5}, "invalid_type", "session.instructions"),
        ({"type": "realtime", "voice": "alloy"}, "unknown_parameter", "session.voice"),
        ({"instructions": "no type"}, "missing_required_parameter", "session.type"),
        ({"type": "transcription"}, "invalid_value", "session.type"),
    ],
)
def test_invalid_session_update_is_an_error_and_changes_nothing(
    make: Callable[..., Harness], patch: Event, code: str, param: str
) -> None:
    h = make()
    before = h.s.resource()
    err = error_of(h.send({"type": "session.update", "event_id": "evt_bad", "session": patch}))
    assert (err["code"], err["param"], err["event_id"]) == (code, param, "evt_bad")
    assert err["type"] == "invalid_request_error"
    assert h.s.resource() == before


def test_malformed_client_events_are_errors(make: Callable[..., Harness]) -> None:
    h = make()
    err = error_of(h.send({"type": "response.explode", "event_id": "evt_u"}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "type", "evt_u")
    err = error_of(h.send({"type": "conversation.item.truncate", "event_id": "evt_v", "item_id": "item_x",
                           "content_index": 0, "audio_end_ms": "1420"}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_type", "audio_end_ms", "evt_v")
    h.s.receive("{not json")
    assert error_of(h.take())["code"] == "invalid_json"


# -- conversation.item.create ------------------------------------------------------------------


def test_item_create_answers_added_then_done(make: Callable[..., Harness]) -> None:
    h = make()
    out = h.send({"type": "conversation.item.create", "event_id": "evt_1", "item": user_text("Hi", "item_a")})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    added, done = out
    expected = {"id": "item_a", "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    assert added["item"] == expected and done["item"] == expected
    assert added["previous_item_id"] is None and done["previous_item_id"] is None
    # a server-assigned id, appended after the first
    second = add_item(h, user_text("Again"))
    assert second["id"].startswith("item_") and second["id"] != "item_a"
    assert [i["id"] for i in h.s.items] == ["item_a", second["id"]]


def test_previous_item_id_places_the_item(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("a", "item_a"))
    add_item(h, user_text("b", "item_b"))
    out = h.send({"type": "conversation.item.create", "previous_item_id": "root", "item": user_text("c", "item_c")})
    assert [o["previous_item_id"] for o in out] == [None, None]
    out = h.send({"type": "conversation.item.create", "previous_item_id": "item_a", "item": user_text("d", "item_d")})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert [o["previous_item_id"] for o in out] == ["item_a", "item_a"]
    assert [i["id"] for i in h.s.items] == ["item_c", "item_a", "item_d", "item_b"]
    # no previous_item_id: appended at the end
    out = h.send({"type": "conversation.item.create", "item": user_text("e", "item_e")})
    assert out[0]["previous_item_id"] == "item_b"
    assert [i["id"] for i in h.s.items] == ["item_c", "item_a", "item_d", "item_b", "item_e"]


def test_unknown_previous_item_id_is_an_error(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("a", "item_a"))
    err = error_of(h.send({"type": "conversation.item.create", "event_id": "evt_p", "previous_item_id": "item_nope",
                           "item": user_text("x", "item_x")}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "previous_item_id", "evt_p")
    assert "item_nope" in err["message"]
    assert [i["id"] for i in h.s.items] == ["item_a"]


def test_duplicate_item_id_is_an_error(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("a", "item_a"))
    err = error_of(h.send({"type": "conversation.item.create", "event_id": "evt_d", "item": user_text("b", "item_a")}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "item.id", "evt_d")
    assert [i["content"][0]["text"] for i in h.s.items] == ["a"]


def test_function_call_output_needs_a_known_call_id(make: Callable[..., Harness]) -> None:
    h = make()
    output = {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'}
    err = error_of(h.send({"type": "conversation.item.create", "event_id": "evt_f", "item": output}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "item.call_id", "evt_f")
    assert h.s.items == []
    call = add_item(h, {"type": "function_call", "name": "get_weather", "arguments": "{}", "call_id": "call_1"})
    assert call["type"] == "function_call" and call["call_id"] == "call_1"
    accepted = add_item(h, output)
    assert accepted["type"] == "function_call_output" and accepted["call_id"] == "call_1"
    assert accepted["output"] == '{"temp": 21}'
    assert [i["type"] for i in h.s.items] == ["function_call", "function_call_output"]


def test_user_audio_item_without_transcript_is_transcribed_before_it_is_done(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    pcm = speech_pcm24k(SHORT)
    item = {"type": "message", "role": "user", "id": "item_u",
            "content": [{"type": "input_audio", "audio": b64_pcm16(pcm)}]}
    out = h.send({"type": "conversation.item.create", "item": item})
    assert types(out) == ["Transcribe", "conversation.item.added"]
    job = out[0]
    assert isinstance(job, Transcribe)
    assert (job.item_id, job.attempt, job.language) == ("item_u", 1, None)
    assert job.audio.size == pcm.size
    added = out[1]["item"]
    assert added["content"] == [{"type": "input_audio", "transcript": None}]  # no audio bytes in events
    # a response has to wait for the words
    out = h.send({"type": "response.create"})
    assert types(out) == ["response.created", "rate_limits.updated"]
    h.s.transcription_result("item_u", 1, " Hello there. ")
    out = h.take()
    assert types(out) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "StartResponse",
    ]
    completed = out[1]
    assert completed["transcript"] == "Hello there."
    assert completed["usage"] == {"type": "duration", "seconds": round(pcm.size / SAMPLE_RATE, 3)}
    assert out[2]["item"]["content"] == [{"type": "input_audio", "transcript": "Hello there."}]
    start = out[3]
    assert isinstance(start, StartResponse)
    assert start.request.items[0]["content"][0]["transcript"] == "Hello there."
    # an audio item that brings its transcript needs no transcription
    out = h.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": b64_pcm16(pcm), "transcript": "Hi"}]}})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]


def test_emitted_events_are_snapshots(make: Callable[..., Harness]) -> None:
    # The runtime serialises events after the session has moved on; an event must not change
    # when the item it describes does.
    h = make(MANUAL)
    h.audio(speech_pcm24k(SHORT))
    out = h.send({"type": "input_audio_buffer.commit"})
    added, job = out[1], out[2]
    assert isinstance(job, Transcribe)
    h.s.transcription_result(job.item_id, job.attempt, SHORT)
    done = only(h.take(), "conversation.item.done")
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert done["item"]["content"] == [{"type": "input_audio", "transcript": SHORT}]
    _, item_id = spoken_answer(h, TWO_PIECES)
    response_done = h.snapshots[-1][0]
    assert response_done["type"] == "response.done"
    h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 500})
    assert response_done["response"]["output"][0]["content"][0]["transcript"] == "Hello there. How are you doing today?"


# -- the response lifecycle --------------------------------------------------------------------


TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_response_create_starts_a_response_with_the_session_settings(make: Callable[..., Harness]) -> None:
    h = make()
    h.send({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief.", "tools": [TOOL], "tool_choice": "required",
        "audio": {"output": {"voice": "marin", "speed": 1.2}}}})
    user = add_item(h, user_text("Weather in Paris?"))
    out = h.send({"type": "response.create"})
    assert types(out) == ["response.created", "rate_limits.updated", "StartResponse"]
    created = out[0]["response"]
    rid = created["id"]
    assert rid.startswith("resp_") and h.s.active_response == rid
    assert created["status"] == "in_progress" and created["status_details"] is None
    assert created["output"] == [] and created["usage"] is None and created["metadata"] is None
    assert created["conversation_id"] == h.s.conversation_id
    assert created["output_modalities"] == ["audio"]
    assert created["max_output_tokens"] == "inf"
    assert created["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}
    assert [r["name"] for r in out[1]["rate_limits"]] == ["requests", "tokens"]
    start = out[2]
    assert isinstance(start, StartResponse)
    assert start.response_id == rid
    assert (start.audio, start.voice, start.speed) == (True, "marin", 1.2)
    req = start.request
    assert req.instructions == "Be brief."
    assert req.items == [user]
    assert req.tools == [TOOL]
    assert req.tool_choice == "required"
    assert req.output_modalities == ("audio",)
    assert req.voice == "marin"
    assert req.max_output_tokens is None
    assert req.metadata is None
    assert req.model == "gpt-realtime"


def test_response_create_overrides_apply_to_that_response_only(make: Callable[..., Harness]) -> None:
    h = make()
    h.send({"type": "session.update", "session": {"type": "realtime", "tools": [TOOL]}})
    add_item(h, user_text("Hi"))
    rid, start = start_response(h, {
        "instructions": "Answer in French.", "tools": [], "output_modalities": ["text"],
        "tool_choice": {"type": "function", "name": "get_weather"}, "max_output_tokens": 200,
        "audio": {"output": {"voice": "cedar"}}})
    req = start.request
    assert req.instructions == "Answer in French."
    assert req.tools == []
    assert req.tool_choice == {"type": "function", "name": "get_weather"}
    assert req.output_modalities == ("text",) and start.audio is False
    assert req.voice == "cedar" and start.voice == "cedar"
    assert req.max_output_tokens == 200
    h.s.response_complete(rid)
    h.take()
    _, start = start_response(h)
    assert start.request.tools == [TOOL] and start.audio is True and start.voice == "alloy"
    assert start.request.instructions == h.s.resource()["instructions"]


def test_audio_response_events_come_in_ga_order(make: Callable[..., Harness]) -> None:
    h = make()
    user = add_item(h, user_text("Say hello."))
    rid, _ = start_response(h)
    h.s.response_text(rid, "Hello ")
    h.s.response_audio(rid, tone(600), piece="Hello")
    h.s.response_text(rid, "world.")
    h.s.response_audio(rid, tone(400), piece="world.")
    h.s.response_complete(rid)
    out = h.take()
    assert types(out) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    events: list[Event] = out
    item_id = events[0]["item"]["id"]
    for e in events[:-1]:
        if "response_id" in e:
            assert e["response_id"] == rid
        if "output_index" in e:
            assert e["output_index"] == 0
        if "content_index" in e:
            assert (e["item_id"], e["content_index"]) == (item_id, 0)
    assert events[0]["item"] == {"id": item_id, "object": "realtime.item", "type": "message",
                                 "status": "in_progress", "role": "assistant", "content": []}
    assert events[1]["item"] == events[0]["item"] and events[1]["previous_item_id"] == user["id"]
    assert events[2]["part"] == {"type": "audio", "transcript": ""}
    assert [events[3]["delta"], events[5]["delta"]] == ["Hello ", "world."]
    assert delta_bytes(out) == 48 * 1000  # PCM16 at 24 kHz: 48 bytes a millisecond
    assert events[8]["transcript"] == "Hello world."
    assert events[9]["part"] == {"type": "audio", "transcript": "Hello world."}
    final = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
             "role": "assistant", "content": [{"type": "output_audio", "transcript": "Hello world."}]}
    assert events[10]["item"] == final
    assert events[11]["item"] == final and events[11]["previous_item_id"] == user["id"]
    response = events[12]["response"]
    assert response["id"] == rid and response["status"] == "completed" and response["status_details"] is None
    assert response["output"] == [final]
    assert response["conversation_id"] == h.s.conversation_id
    usage = response["usage"]
    usage_consistent(usage)
    assert usage["output_token_details"]["audio_tokens"] == 20  # 1 s of speech, ~1 token / 50 ms
    assert usage["output_token_details"]["text_tokens"] > 0
    assert usage["input_token_details"]["text_tokens"] > 0
    # the conversation now ends with the answer, which keeps its audio
    assert h.s.items[-1] == final
    audio = h.s.item_audio(item_id)
    assert audio is not None and audio.size == SAMPLE_RATE
    assert h.s.active_response is None


def test_text_response_uses_output_text_events(make: Callable[..., Harness]) -> None:
    h = make({"output_modalities": ["text"]})
    add_item(h, user_text("Say hello."))
    rid, start = start_response(h)
    assert start.audio is False and start.request.output_modalities == ("text",)
    h.s.response_text(rid, "Hello ")
    h.s.response_text(rid, "world.")
    h.s.response_complete(rid)
    out = h.take()
    assert types(out) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    events: list[Event] = out
    assert events[2]["part"] == {"type": "text", "text": ""}
    assert events[5]["text"] == "Hello world."
    assert events[6]["part"] == {"type": "text", "text": "Hello world."}
    assert events[7]["item"]["content"] == [{"type": "output_text", "text": "Hello world."}]
    response = events[9]["response"]
    assert response["output_modalities"] == ["text"] and response["status"] == "completed"
    usage_consistent(response["usage"])
    assert response["usage"]["output_token_details"]["audio_tokens"] == 0


def test_function_call_closes_the_message_first(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Weather in Paris?"))
    rid, _ = start_response(h)
    h.s.response_text(rid, "Let me check.")
    h.s.response_audio(rid, tone(300), piece="Let me check.")
    h.take()
    h.s.response_function_call(rid, "get_weather", '{"city":"Paris"}', call_id="call_w")
    out = h.take()
    assert types(out) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
    ]
    events: list[Event] = out
    message_id = events[3]["item"]["id"]
    assert events[3]["output_index"] == 0 and events[3]["item"]["status"] == "completed"
    call = events[5]["item"]
    assert events[5]["output_index"] == 1
    assert call == {"id": call["id"], "object": "realtime.item", "type": "function_call", "status": "in_progress",
                    "name": "get_weather", "call_id": "call_w", "arguments": ""}
    assert events[6]["previous_item_id"] == message_id
    assert events[7]["delta"] == '{"city":"Paris"}' and events[7]["call_id"] == "call_w"
    assert (events[8]["name"], events[8]["arguments"], events[8]["output_index"]) == (
        "get_weather", '{"city":"Paris"}', 1)
    assert events[9]["item"] == {**call, "status": "completed", "arguments": '{"city":"Paris"}'}
    assert events[10]["item"] == events[9]["item"] and events[10]["previous_item_id"] == message_id
    # more words after the call start a new message
    h.s.response_text(rid, "One moment.")
    h.s.response_complete(rid)
    out = h.take()
    assert out[0]["output_index"] == 2
    response = only(out, "response.done")["response"]
    assert [o["type"] for o in response["output"]] == ["message", "function_call", "message"]
    assert [i["type"] for i in h.s.items] == ["message", "message", "function_call", "message"]
    # the client can answer the call now
    add_item(h, {"type": "function_call_output", "call_id": "call_w", "output": "sunny"})


def test_second_response_create_while_one_is_active_is_an_error(make: Callable[..., Harness]) -> None:
    h = make()
    rid, _ = start_response(h)
    err = error_of(h.send({"type": "response.create", "event_id": "evt_again"}))
    assert err["code"] == "conversation_already_has_active_response"
    assert err["event_id"] == "evt_again"
    assert rid in err["message"]
    assert h.s.active_response == rid
    h.s.response_complete(rid)
    h.take()
    start_response(h)  # fine once the first is done


def test_response_cancel_finishes_everything_as_cancelled(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Tell me a story."))
    rid, _ = start_response(h)
    h.s.response_text(rid, "Once upon a time")
    h.s.response_audio(rid, tone(500), piece="Once upon a time")
    h.take()
    out = h.send({"type": "response.cancel"})
    assert types(out) == [
        "CancelResponse",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert out[0] == CancelResponse(rid)
    assert out[2]["transcript"] == "Once upon a time"
    assert out[4]["item"]["status"] == "incomplete"
    response = out[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    usage_consistent(response["usage"])
    assert h.s.active_response is None
    # whatever the responder still produces is dropped
    h.s.response_text(rid, " there was")
    h.s.response_audio(rid, tone(100))
    h.s.response_complete(rid)
    assert h.take() == []
    # cancelling by id works too
    rid2, _ = start_response(h)
    out = h.send({"type": "response.cancel", "response_id": rid2})
    assert out[0] == CancelResponse(rid2)
    assert out[-1]["response"]["status"] == "cancelled"


def test_response_cancel_when_idle_is_an_error(make: Callable[..., Harness]) -> None:
    h = make()
    err = error_of(h.send({"type": "response.cancel", "event_id": "evt_c"}))
    assert (err["code"], err["event_id"]) == ("response_cancel_not_active", "evt_c")
    rid, _ = start_response(h)
    h.s.response_complete(rid)
    h.take()
    err = error_of(h.send({"type": "response.cancel", "response_id": rid}))
    assert err["code"] == "response_cancel_not_active"
    err = error_of(h.send({"type": "response.cancel", "response_id": "resp_unknown"}))
    assert err["code"] == "response_cancel_not_active"


def test_response_failed_is_an_error_and_a_failed_response(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Hi"))
    rid, _ = start_response(h)
    h.s.response_text(rid, "Well")
    h.take()
    h.s.response_failed(rid, "The responder failed: boom")
    out = h.take()
    assert types(out) == [
        "error",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    err = out[0]["error"]
    assert (err["type"], err["code"], err["message"]) == ("server_error", "response_failed", "The responder failed: boom")
    response = out[-1]["response"]
    assert response["status"] == "failed"
    assert response["status_details"] == {"type": "failed", "error": {"type": "server_error", "code": "responder_error"}}
    assert response["output"][0]["status"] == "incomplete"
    assert h.s.active_response is None


def test_response_without_output_still_has_one_item(make: Callable[..., Harness]) -> None:
    h = make()
    rid, _ = start_response(h)
    h.s.response_complete(rid)
    out = h.take()
    response = only(out, "response.done")["response"]
    assert response["status"] == "completed" and len(response["output"]) == 1


# -- out-of-band responses ---------------------------------------------------------------------


def test_out_of_band_response_stays_out_of_the_conversation(make: Callable[..., Harness]) -> None:
    h = make()
    a = add_item(h, user_text("I'd like to cancel my plan.", "item_a"))
    b = add_item(h, user_text("Actually, never mind.", "item_b"))
    default_id, _ = start_response(h)  # the default response keeps running meanwhile
    inline = user_text("Classify the topic.")
    out = h.send({"type": "response.create", "response": {
        "conversation": "none", "metadata": {"purpose": "classify"}, "output_modalities": ["text"],
        "instructions": "Return one word.",
        "input": [inline, {"type": "item_reference", "id": "item_a"}]}})
    assert types(out) == ["response.created", "rate_limits.updated", "StartResponse"]
    created = out[0]["response"]
    assert created["conversation_id"] is None
    assert created["metadata"] == {"purpose": "classify"}
    start = out[2]
    assert isinstance(start, StartResponse)
    oob = start.response_id
    assert oob == created["id"] and oob != default_id
    assert start.request.instructions == "Return one word."
    assert start.request.metadata == {"purpose": "classify"}
    items = start.request.items
    assert len(items) == 2
    assert items[0] == {**inline, "id": items[0]["id"]}  # the inline item as given
    assert items[1] == a  # the reference resolved to the conversation's item
    assert h.s.active_response == default_id
    h.s.response_text(oob, "billing")
    h.s.response_complete(oob)
    out = h.take()
    assert types(out) == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    done = out[-1]["response"]
    assert done["conversation_id"] is None and done["metadata"] == {"purpose": "classify"}
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "billing"}]
    assert h.s.items == [a, b]
    assert h.s.active_response == default_id
    # the default response finishes into the conversation as usual
    h.s.response_text(default_id, "Okay.")
    h.s.response_complete(default_id)
    out = h.take()
    assert "conversation.item.done" in types(out)
    assert only(out, "response.done")["response"]["conversation_id"] == h.s.conversation_id
    assert len(h.s.items) == 3


def test_out_of_band_response_with_empty_input_has_no_context(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Hi"))
    _, start = start_response(h, {"conversation": "none", "input": []})
    assert start.request.items == []


def test_out_of_band_function_call_stays_out_of_the_conversation(make: Callable[..., Harness]) -> None:
    h = make()
    rid, _ = start_response(h, {"conversation": "none", "input": []})
    h.s.response_function_call(rid, "get_weather", "{}", call_id="call_x")
    h.s.response_complete(rid)
    out = h.take()
    assert not any(t.startswith("conversation.item") for t in types(out))
    assert h.s.items == []


def test_speech_does_not_interrupt_an_out_of_band_response(make: Callable[..., Harness]) -> None:
    h = make()
    oob, _ = start_response(h, {"conversation": "none", "input": [], "output_modalities": ["text"]})
    got = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).rest()
    assert "CancelResponse" not in types(got)
    # the turn still gets its own default response
    assert types(got) == ["input_audio_buffer.speech_started", "Transcribe", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "conversation.item.added", "response.created",
                          "rate_limits.updated"]
    h.s.response_text(oob, "still here")
    h.s.response_complete(oob)
    assert only(h.take(), "response.done")["response"]["status"] == "completed"


# -- max_output_tokens -------------------------------------------------------------------------


def test_small_max_output_tokens_makes_the_response_incomplete(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Count."))
    rid, start = start_response(h, {"max_output_tokens": 3})
    assert start.request.max_output_tokens == 3
    h.s.response_text(rid, "One two three four five six seven eight nine ten.")
    out = h.take()
    assert types(out)[-2:] == ["response.done", "CancelResponse"]
    assert out[-1] == CancelResponse(rid)
    response = out[-2]["response"]
    assert response["status"] == "incomplete"
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert response["max_output_tokens"] == 3
    assert response["output"][0]["status"] == "incomplete"
    h.s.response_text(rid, "more")
    h.s.response_complete(rid)
    assert h.take() == []
    assert h.s.active_response is None


def test_session_max_output_tokens_applies_too(make: Callable[..., Harness]) -> None:
    h = make({"max_output_tokens": 2, "output_modalities": ["text"]})
    rid, _ = start_response(h)
    h.s.response_text(rid, "A long answer that goes on and on.")
    response = only(h.take(), "response.done")["response"]
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}


# -- truncate, retrieve, delete ----------------------------------------------------------------


def test_truncate_keeps_only_what_was_heard(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Hi"))
    _, item_id = spoken_answer(h, TWO_PIECES)
    out = h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 2000})
    assert types(out) == ["conversation.item.truncated"]
    assert out[0] == {**out[0], "item_id": item_id, "content_index": 0, "audio_end_ms": 2000}
    # the first piece entirely, and the first half of the second (2 of its 5 words)
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello there. How are"
    audio = h.s.item_audio(item_id)
    assert audio is not None and audio.size == 2 * SAMPLE_RATE
    # retrieve: the audio that is left, in the session's output format
    out = h.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert types(out) == ["conversation.item.retrieved"]
    part = out[0]["item"]["content"][0]
    assert part["type"] == "output_audio" and part["transcript"] == "Hello there. How are"
    assert len(base64.b64decode(part["audio"])) == 2000 * 48
    # events and the conversation carry no audio bytes
    assert "audio" not in h.s.items[-1]["content"][0]


def test_truncate_inside_the_first_piece(make: Callable[..., Harness]) -> None:
    h = make()
    _, item_id = spoken_answer(h, TWO_PIECES)
    h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 500})
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello"
    h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 0})
    assert h.s.items[-1]["content"][0]["transcript"] == ""


def test_truncate_beyond_the_audio_is_clamped(make: Callable[..., Harness]) -> None:
    h = make()
    _, item_id = spoken_answer(h, TWO_PIECES)
    out = h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                  "audio_end_ms": 10_000})
    assert types(out) == ["conversation.item.truncated"]
    assert out[0]["audio_end_ms"] == 3000
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello there. How are you doing today?"
    audio = h.s.item_audio(item_id)
    assert audio is not None and audio.size == 3 * SAMPLE_RATE


def test_a_second_truncate_keeps_only_what_was_heard(make: Callable[..., Harness]) -> None:
    h = make()
    _, item_id = spoken_answer(h, TWO_PIECES)
    h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 2000})
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello there. How are"
    h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500})
    # 500 ms into the 2 s second piece: 1 of its 5 words, as if truncated at 1500 ms at once
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello there. How"


def test_truncate_only_assistant_audio(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Hi", "item_user"))
    add_item(h, {"type": "message", "role": "assistant", "id": "item_text",
                 "content": [{"type": "output_text", "text": "Typed answer."}]})
    _, item_id = spoken_answer(h, TWO_PIECES)

    def truncate(item: str, index: int = 0, event_id: str = "evt_t") -> dict[str, Any]:
        return error_of(h.send({"type": "conversation.item.truncate", "event_id": event_id, "item_id": item,
                                "content_index": index, "audio_end_ms": 100}))

    err = truncate("item_user")
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "item_id", "evt_t")
    err = truncate("item_text")
    assert (err["code"], err["param"]) == ("invalid_value", "content_index")
    err = truncate(item_id, 1)
    assert (err["code"], err["param"]) == ("invalid_value", "content_index")
    err = truncate("item_missing")
    assert (err["code"], err["param"]) == ("item_truncate_invalid_item_id", "item_id")
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello there. How are you doing today?"


def test_truncating_an_item_still_being_written_cancels_its_response(make: Callable[..., Harness]) -> None:
    h = make()
    add_item(h, user_text("Hi"))
    rid, item_id = spoken_answer(h, TWO_PIECES, complete=False)
    out = h.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500})
    assert types(out) == [
        "CancelResponse",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "conversation.item.truncated",
    ]
    assert out[0] == CancelResponse(rid)
    response = out[6]["response"]
    assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert out[7]["audio_end_ms"] == 1500
    assert h.s.items[-1]["content"][0]["transcript"] == "Hello there. How"
    audio = h.s.item_audio(item_id)
    assert audio is not None and audio.size == 3 * SAMPLE_RATE // 2
    assert h.s.active_response is None
    h.s.response_audio(rid, tone(200))
    assert h.take() == []


def test_retrieve_and_delete(make: Callable[..., Harness]) -> None:
    h = make()
    a = add_item(h, user_text("a", "item_a"))
    add_item(h, user_text("b", "item_b"))
    out = h.send({"type": "conversation.item.retrieve", "item_id": "item_a"})
    assert types(out) == ["conversation.item.retrieved"] and out[0]["item"] == a
    assert out[0]["previous_item_id"] is None  # (a Parley extension: where the item is)
    later = h.send({"type": "conversation.item.retrieve", "item_id": "item_b"})
    assert later[0]["previous_item_id"] == "item_a"
    err = error_of(h.send({"type": "conversation.item.retrieve", "event_id": "evt_r", "item_id": "item_x"}))
    assert (err["code"], err["param"], err["event_id"]) == ("item_retrieve_invalid_item_id", "item_id", "evt_r")
    out = h.send({"type": "conversation.item.delete", "item_id": "item_a"})
    assert types(out) == ["conversation.item.deleted"] and out[0]["item_id"] == "item_a"
    assert [i["id"] for i in h.s.items] == ["item_b"]
    err = error_of(h.send({"type": "conversation.item.delete", "event_id": "evt_x", "item_id": "item_a"}))
    assert (err["code"], err["param"], err["event_id"]) == ("item_delete_invalid_item_id", "item_id", "evt_x")
    # the next item goes after what is left
    out = h.send({"type": "conversation.item.create", "item": user_text("c")})
    assert out[0]["previous_item_id"] == "item_b"


# -- the input audio buffer --------------------------------------------------------------------


def test_append_of_odd_pcm16_bytes_is_an_error(make: Callable[..., Harness]) -> None:
    h = make(MANUAL)
    err = error_of(h.send({"type": "input_audio_buffer.append", "event_id": "evt_a",
                           "audio": base64.b64encode(b"\x00\x01\x02").decode()}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "audio", "evt_a")
    err = error_of(h.send({"type": "input_audio_buffer.commit"}))
    assert err["code"] == "input_audio_buffer_commit_empty"  # nothing was added


def test_commit_needs_100_ms(make: Callable[..., Harness]) -> None:
    h = make(MANUAL)
    err = error_of(h.send({"type": "input_audio_buffer.commit", "event_id": "evt_e"}))
    assert (err["code"], err["event_id"]) == ("input_audio_buffer_commit_empty", "evt_e")
    assert "0.00ms" in err["message"]
    assert h.send({"type": "input_audio_buffer.append", "audio": b64_pcm16(tone(60))}) == []
    err = error_of(h.send({"type": "input_audio_buffer.commit"}))
    assert err["code"] == "input_audio_buffer_commit_empty" and "60.00ms" in err["message"]
    assert h.s.items == []


def test_manual_commit_of_speech(make: Callable[..., Harness]) -> None:
    h = make(MANUAL)
    add_item(h, user_text("first", "item_first"))
    pcm = speech_pcm24k(PHRASE)
    data = float_to_pcm16(pcm)
    for i in range(0, len(data), 4800):  # 100 ms appends: no reply to any
        assert h.send({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(data[i : i + 4800]).decode()}) == []
    out = h.send({"type": "input_audio_buffer.commit"})
    assert types(out) == ["input_audio_buffer.committed", "conversation.item.added", "Transcribe"]
    committed, added, job = out
    item_id = committed["item_id"]
    assert committed["previous_item_id"] == "item_first"
    assert added["previous_item_id"] == "item_first"
    assert added["item"] == {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                             "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
    assert isinstance(job, Transcribe) and (job.item_id, job.attempt) == (item_id, 1)
    assert job.audio.size == pcm.size
    np.testing.assert_allclose(job.audio, pcm, atol=1 / 32768)
    h.s.transcription_result(item_id, 1, PHRASE)
    out = h.take()
    assert types(out) == ["conversation.item.done"]  # transcription events only when it is on
    assert out[0]["item"]["content"][0]["transcript"] == PHRASE
    # a result for the same item again changes nothing
    h.s.transcription_result(item_id, 1, "other")
    assert h.take() == []
    # the buffer is empty after a commit
    assert error_of(h.send({"type": "input_audio_buffer.commit"}))["code"] == "input_audio_buffer_commit_empty"


def test_clear_drops_the_buffer(make: Callable[..., Harness]) -> None:
    h = make(MANUAL)
    h.send({"type": "input_audio_buffer.append", "audio": b64_pcm16(speech_pcm24k(SHORT))})
    assert types(h.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]
    assert error_of(h.send({"type": "input_audio_buffer.commit"}))["code"] == "input_audio_buffer_commit_empty"


def test_transcription_failure(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"turn_detection": None, "transcription": {"model": "gpt-4o-transcribe"}}}})
    h.audio(speech_pcm24k(SHORT))
    out = h.send({"type": "input_audio_buffer.commit"})
    job = only(out, "Transcribe")
    h.s.transcription_result(job.item_id, job.attempt, None, error="audio_unintelligible")
    out = h.take()
    assert types(out) == ["conversation.item.input_audio_transcription.failed", "conversation.item.done"]
    assert out[0]["error"]["message"] == "audio_unintelligible"
    assert out[1]["item"]["content"][0]["transcript"] is None


def test_g711_in_and_out(make: Callable[..., Harness]) -> None:
    h = make()
    out = h.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}},
                                      "output": {"format": {"type": "audio/pcmu"}}}}})
    session = out[0]["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    speech = speech_pcm24k(PHRASE)
    ulaw = g711.ulaw_encode(float_to_int16(resample(speech, SAMPLE_RATE, 8000)))
    got: list[Out] = []
    for i in range(0, len(ulaw), 160):  # 20 ms of mu-law per append
        got += h.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw[i : i + 160]).decode()})
        if any(is_type("input_audio_buffer.speech_stopped")(o) for o in got):
            break
    assert types(got) == ["input_audio_buffer.speech_started", "Transcribe", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "conversation.item.added", "response.created",
                          "rate_limits.updated"]
    job = only(got, "Transcribe")
    item_id = job.item_id
    h.s.transcription_result(item_id, job.attempt, PHRASE)
    out = h.take()
    assert types(out) == ["conversation.item.done", "StartResponse"]
    rid = out[1].response_id
    created = only(got, "response.created")["response"]
    assert created["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    h.s.response_text(rid, "It is sunny.")
    for _ in range(10):
        h.s.response_audio(rid, tone(100), piece="It is sunny." if _ == 0 else None)
    h.s.response_complete(rid)
    out = h.take()
    assert delta_bytes(out) == 8 * 1000  # mu-law at 8 kHz: 8 bytes a millisecond
    ulaw_out = b"".join(base64.b64decode(o["delta"]) for o in all_of(out, "response.output_audio.delta"))
    decoded = g711.ulaw_decode(ulaw_out).astype(np.float32) / 32768
    spectrum = np.abs(np.fft.rfft(decoded))
    assert abs(np.argmax(spectrum) * 8000 / decoded.size - 220) <= 2  # the tone, read back as mu-law
    assert abs(np.sqrt(np.mean(decoded**2)) - 0.3 / np.sqrt(2)) < 0.02
    # retrieve gives each item's audio in the session's formats
    user_audio = h.s.item_audio(item_id)
    assert user_audio is not None
    out = h.send({"type": "conversation.item.retrieve", "item_id": item_id})
    data = base64.b64decode(out[0]["item"]["content"][0]["audio"])
    assert abs(len(data) - user_audio.size / 3) <= 1
    answer = only(h.s.items[-1:], "message")
    out = h.send({"type": "conversation.item.retrieve", "item_id": answer["id"]})
    assert len(base64.b64decode(out[0]["item"]["content"][0]["audio"])) == 8000


# -- server VAD with real speech ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "voice"), [
    ("I have been a customer for six years.", "echo"),
    ("What does that offer include?", "alloy"),
    ("Another company offered me internet for fifty dollars a month.", "coral"),
])
def test_the_silence_window_counts_from_the_end_of_the_sound(
        make: Callable[..., Harness], text: str, voice: str) -> None:
    # Silero calls the fading end of a word voice for another 15-65 ms; the turn must not wait for
    # that on top of the window. It ends on a VAD frame (32 ms) within a frame of end of sound + 500
    # ms (the session finds the end of the sound inside silero's last voiced frames; espeak's output,
    # and so where its last faint block falls, shifts by a few ms from run to run).
    h = make()
    pcm = speech_pcm24k(text, voice=voice, lead_silence_ms=1000, tail_silence_ms=1500)
    end = loud_until(pcm, SAMPLE_RATE // 250) * 1000 / SAMPLE_RATE  # last 4 ms above -50 dBFS
    stopped = only(Mic(h, pcm).until(is_type("input_audio_buffer.speech_stopped")),
                   "input_audio_buffer.speech_stopped")
    assert end + 500 - 32 <= stopped["audio_end_ms"] <= end + 500 + 32


def test_server_vad_turn_with_the_speculative_transcript_answered_early(make: Callable[..., Harness]) -> None:
    h = make()
    lead = 1000
    pcm = speech_pcm24k(PHRASE, lead_silence_ms=lead, tail_silence_ms=1500)
    onset, end = speech_bounds_ms(PHRASE, lead_silence_ms=lead)
    mic = Mic(h, pcm)
    got = mic.until(is_type("Transcribe"))
    assert types(got) == ["input_audio_buffer.speech_started", "Transcribe"]
    started, job = got
    item_id = started["item_id"]
    # the start includes the 300 ms of prefix padding
    assert abs(started["audio_start_ms"] - (onset - 300)) <= 100
    assert isinstance(job, Transcribe) and (job.item_id, job.attempt) == (item_id, 1)
    # the speculative run starts in the silence window, well before the turn ends
    assert mic.at[-1][0] < end + 300
    h.s.transcription_result(item_id, 1, PHRASE)  # the STT answers before the turn is over
    assert h.take() == []
    got = mic.until(is_type("input_audio_buffer.speech_stopped"))
    assert types(got) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
        "StartResponse",
    ]
    stopped, committed, added, done = got[:4]
    assert stopped["item_id"] == item_id and committed["item_id"] == item_id
    assert abs(stopped["audio_end_ms"] - (end + 500)) <= 100
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert done["item"]["content"] == [{"type": "input_audio", "transcript": PHRASE}]
    start = got[-1]
    assert isinstance(start, StartResponse)
    assert start.request.items[-1]["id"] == item_id
    assert start.request.items[-1]["content"][0]["transcript"] == PHRASE
    audio = h.s.item_audio(item_id)
    assert audio is not None
    assert abs(audio.size * 1000 / SAMPLE_RATE - (stopped["audio_end_ms"] - started["audio_start_ms"])) <= 2
    assert mic.rest() == []


def test_server_vad_turn_with_the_transcript_after_the_commit(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    mic = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500))
    got = mic.until(is_type("input_audio_buffer.speech_stopped"))
    assert types(got) == [
        "input_audio_buffer.speech_started",
        "Transcribe",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "response.created",
        "rate_limits.updated",
    ]
    job = got[1]
    assert isinstance(job, Transcribe)
    h.s.transcription_result(job.item_id, job.attempt, PHRASE)
    out = h.take()
    assert types(out) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "StartResponse",
    ]
    assert mic.rest() == []


def test_speech_resuming_in_the_silence_window_supersedes_the_speculative_attempt(
    make: Callable[..., Harness],
) -> None:
    h = make({"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}}})
    first = speech_pcm24k("I would like to book a table", tail_silence_ms=0)
    second = speech_pcm24k("for two people tonight", lead_silence_ms=0, tail_silence_ms=1500)
    mic = Mic(h, np.concatenate([first, silence(450), second]))
    got = mic.until(is_type("input_audio_buffer.speech_stopped"))
    assert types(got).count("input_audio_buffer.speech_started") == 1  # one turn
    jobs = all_of(got, "Transcribe")
    # a speculative run in the pause, superseded when the user goes on (natural speech may have
    # more short pauses, each with its own attempt)
    assert len(jobs) >= 2
    first_end = first.size * 1000 / SAMPLE_RATE
    assert any(first_end < ms < first_end + 450 for ms, o in mic.at if isinstance(o, Transcribe))
    assert jobs[0].attempt == 1
    assert [j.attempt for j in jobs] == sorted({j.attempt for j in jobs})  # each later than the last
    fresh = jobs[-1]
    assert fresh.audio.size > jobs[0].audio.size + second.size // 2  # it has both phrases
    assert all(j.item_id == fresh.item_id for j in jobs)
    # the stale attempts' answers are ignored; the current one completes the item
    for stale in jobs[:-1]:
        h.s.transcription_result(stale.item_id, stale.attempt, "I would like to book a table")
    assert h.take() == []
    h.s.transcription_result(fresh.item_id, fresh.attempt, "I would like to book a table for two people tonight")
    out = h.take()
    assert types(out) == ["conversation.item.done", "StartResponse"]
    assert out[0]["item"]["content"][0]["transcript"].endswith("for two people tonight")


def test_a_failed_speculative_transcription_is_reported_as_failed(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}})
    mic = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500))
    job = only(mic.until(is_type("Transcribe")), "Transcribe")
    h.s.transcription_result(job.item_id, job.attempt, None, error="The STT model failed")
    assert h.take() == []
    got = mic.until(is_type("input_audio_buffer.speech_stopped"))
    assert types(got) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
        "StartResponse",
    ]
    assert got[3]["error"]["message"] == "The STT model failed"
    assert got[4]["item"]["content"] == [{"type": "input_audio", "transcript": None}]


def test_create_response_false_makes_no_response(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}})
    got = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).rest()
    assert types(got) == ["input_audio_buffer.speech_started", "Transcribe", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "conversation.item.added"]
    job = got[1]
    assert isinstance(job, Transcribe)
    h.s.transcription_result(job.item_id, job.attempt, PHRASE)
    assert types(h.take()) == ["conversation.item.done"]
    assert h.s.active_response is None


def test_speech_interrupts_an_active_response(make: Callable[..., Harness]) -> None:
    h = make()
    rid, _ = start_response(h)
    h.s.response_text(rid, "Let me tell you")
    h.s.response_audio(rid, tone(300), piece="Let me tell you")
    h.take()
    mic = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500))
    got = mic.until(is_type("input_audio_buffer.speech_started"))
    assert types(got) == [
        "input_audio_buffer.speech_started",
        "CancelResponse",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert got[1] == CancelResponse(rid)
    response = got[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    # the turn goes on and makes the next response
    rest = mic.rest()
    assert "response.created" in types(rest)


def test_no_interruption_when_interrupt_response_is_false(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}}})
    rid, _ = start_response(h)
    got = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).rest()
    assert types(got) == ["input_audio_buffer.speech_started", "Transcribe", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "conversation.item.added"]  # no second response
    assert h.s.active_response == rid


def test_semantic_vad_eagerness_sets_how_long_it_waits(make: Callable[..., Harness]) -> None:
    ends = {}
    pcm = speech_pcm24k(PHRASE, tail_silence_ms=2500)
    for eagerness in ("high", "low"):
        h = make({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": eagerness}}}})
        mic = Mic(h, pcm)
        got = mic.until(is_type("input_audio_buffer.speech_stopped"))
        assert types(got)[0] == "input_audio_buffer.speech_started"
        ends[eagerness] = only(got, "input_audio_buffer.speech_stopped")["audio_end_ms"]
    _, speech_end = speech_bounds_ms(PHRASE)
    assert abs(ends["high"] - (speech_end + 400)) <= 100
    assert abs(ends["low"] - ends["high"] - 800) <= 40


def test_silence_and_noise_make_no_turn(make: Callable[..., Harness]) -> None:
    h = make()
    rng = np.random.default_rng(7)
    noise = (0.02 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    assert Mic(h, np.concatenate([silence(2000), noise, silence(500)])).rest() == []
    assert h.s.items == []


# -- transcription sessions --------------------------------------------------------------------


def test_transcription_session_transcribes_turns_and_never_responds(make: Callable[..., Harness]) -> None:
    h = make(TranscriptionSessionConfig())
    assert h.snapshots[0][0]["session"]["object"] == "realtime.transcription_session"
    got = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).rest()
    assert types(got) == ["input_audio_buffer.speech_started", "Transcribe", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "conversation.item.added"]
    job = got[1]
    assert isinstance(job, Transcribe)
    h.s.transcription_result(job.item_id, job.attempt, PHRASE)
    out = h.take()
    assert types(out) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert out[1]["transcript"] == PHRASE
    assert out[1]["usage"]["type"] == "duration"
    err = error_of(h.send({"type": "response.create", "event_id": "evt_rc"}))
    assert (err["type"], err["event_id"]) == ("invalid_request_error", "evt_rc")
    # a second turn: still no response
    got = Mic(h, speech_pcm24k(SHORT, tail_silence_ms=1500)).rest()
    assert "StartResponse" not in types(got) and "response.created" not in types(got)
    assert [i["role"] for i in h.s.items] == ["user", "user"]


# -- idle timeout ------------------------------------------------------------------------------


IDLE = {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}}


def test_idle_timeout_commits_the_silence_and_responds(make: Callable[..., Harness]) -> None:
    h = make(IDLE)
    rid, _ = start_response(h)
    h.s.tick(100.0)
    h.s.response_text(rid, "Are you there?")
    h.s.response_complete(rid)
    h.take()
    h.s.tick(100.0)
    mic = Mic(h, silence(8000), chunk_ms=100, clock=100.0)
    got = mic.until(is_type("input_audio_buffer.timeout_triggered"))
    when = mic.at[-1][0]
    assert abs(when - 5000) <= 100
    assert types(got) == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "Transcribe",
        "response.created",
        "rate_limits.updated",
    ]
    timeout = got[0]
    item_id = timeout["item_id"]
    start_ms, end_ms = timeout["audio_start_ms"], timeout["audio_end_ms"]
    assert end_ms == int(h.audio_ms)
    assert 0 <= start_ms < end_ms and end_ms - start_ms <= 5000  # within the idle time
    assert got[1]["item_id"] == item_id
    job = got[3]
    assert isinstance(job, Transcribe) and job.item_id == item_id
    assert job.audio.size == (end_ms - start_ms) * SAMPLE_RATE // 1000  # the committed audio is that span
    h.s.transcription_result(item_id, job.attempt, "")
    assert types(h.take()) == ["conversation.item.done", "StartResponse"]


def test_speech_resets_the_idle_timer(make: Callable[..., Harness]) -> None:
    h = make({"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000,
                                                     "create_response": False}}}})
    h.s.tick(0.0)
    pcm = np.concatenate([silence(3000), speech_pcm24k(PHRASE, lead_silence_ms=0, tail_silence_ms=0),
                          silence(9000)])
    mic = Mic(h, pcm, chunk_ms=100, clock=0.0)
    got = mic.until(is_type("input_audio_buffer.timeout_triggered"))
    stopped_at = next(ms for ms, o in mic.at if is_type("input_audio_buffer.speech_stopped")(o))
    fired_at = mic.at[-1][0]
    assert fired_at > 6000  # not 5 s after the start
    assert abs(fired_at - (stopped_at + 5000)) <= 150  # 5 s after the last tick that heard speech
    assert types(got)[:2] == ["input_audio_buffer.speech_started", "Transcribe"]


def test_no_idle_timeout_without_the_setting(make: Callable[..., Harness]) -> None:
    h = make()
    h.s.tick(0.0)
    assert Mic(h, silence(8000), chunk_ms=100, clock=0.0).rest() == []


# -- WebRTC: the server plays the audio --------------------------------------------------------


def test_server_playback_sends_no_audio_deltas(make: Callable[..., Harness]) -> None:
    h = make(playback="server")
    add_item(h, user_text("Hi"))
    rid, _ = start_response(h)
    h.s.response_text(rid, "Hello there. ")
    h.s.response_audio(rid, tone(500), piece="Hello there.")
    h.s.response_audio(rid, tone(500))
    h.s.response_complete(rid)
    out = h.take()
    assert types(out) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "output_audio_buffer.started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert out[4]["response_id"] == rid
    assert h.s.message_item_id(rid) is None
    h.s.playback_stopped(rid)
    out = h.take()
    assert types(out) == ["output_audio_buffer.stopped"] and out[0]["response_id"] == rid
    # nothing is playing any more: the next turn clears nothing
    got = Mic(h, speech_pcm24k(SHORT)).until(is_type("input_audio_buffer.speech_started"))
    assert types(got) == ["input_audio_buffer.speech_started"]


def test_barge_in_while_a_finished_response_is_still_playing(make: Callable[..., Harness]) -> None:
    h = make(playback="server")
    add_item(h, user_text("Hi"))
    rid, item_id = spoken_answer(h, TWO_PIECES)
    mic = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500))
    got = mic.until(is_type("input_audio_buffer.speech_started"))
    assert types(got) == ["input_audio_buffer.speech_started", "ClearPlayback"]
    assert got[1] == ClearPlayback(rid)
    # the driver drops the queued audio; 2 s of the answer had been played
    h.s.playback_cleared(rid, item_id, 2000)
    out = h.take()
    assert types(out) == ["conversation.item.truncated", "output_audio_buffer.cleared"]
    assert (out[0]["item_id"], out[0]["audio_end_ms"]) == (item_id, 2000)
    assert out[1]["response_id"] == rid
    answer = next(i for i in h.s.items if i["id"] == item_id)
    assert answer["content"][0]["transcript"] == "Hello there. How are"
    audio = h.s.item_audio(item_id)
    assert audio is not None and audio.size == 2 * SAMPLE_RATE


def test_barge_in_during_a_server_played_response(make: Callable[..., Harness]) -> None:
    h = make(playback="server")
    add_item(h, user_text("Hi"))
    rid, item_id = spoken_answer(h, TWO_PIECES, complete=False)
    got = Mic(h, speech_pcm24k(PHRASE, tail_silence_ms=1500)).until(is_type("input_audio_buffer.speech_started"))
    assert types(got)[:3] == ["input_audio_buffer.speech_started", "CancelResponse", "ClearPlayback"]
    assert got[2] == ClearPlayback(rid)
    response = only(got, "response.done")["response"]
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    h.s.playback_cleared(rid, item_id, 500)
    out = h.take()
    assert types(out) == ["conversation.item.truncated", "output_audio_buffer.cleared"]
    assert next(i for i in h.s.items if i["id"] == item_id)["content"][0]["transcript"] == "Hello"


def test_output_audio_buffer_clear_only_with_server_playback(make: Callable[..., Harness]) -> None:
    h = make()
    err = error_of(h.send({"type": "output_audio_buffer.clear", "event_id": "evt_o"}))
    assert (err["type"], err["event_id"]) == ("invalid_request_error", "evt_o")
    h = make(playback="server")
    rid, item_id = spoken_answer(h, TWO_PIECES)
    out = h.send({"type": "output_audio_buffer.clear"})
    assert out == [ClearPlayback(rid)]
    h.s.playback_cleared(rid, item_id, 1000)
    out = h.take()
    assert types(out) == ["conversation.item.truncated", "output_audio_buffer.cleared"]
    assert next(i for i in h.s.items if i["id"] == item_id)["content"][0]["transcript"] == "Hello there."


def test_response_cancel_with_server_playback_clears_it(make: Callable[..., Harness]) -> None:
    h = make(playback="server")
    rid, item_id = spoken_answer(h, TWO_PIECES, complete=False)
    out = h.send({"type": "response.cancel"})
    assert types(out)[:2] == ["CancelResponse", "ClearPlayback"] and out[1] == ClearPlayback(rid)
    assert out[-1]["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    h.s.playback_cleared(rid, item_id, 300)
    assert types(h.take()) == ["conversation.item.truncated", "output_audio_buffer.cleared"]
    assert next(i for i in h.s.items if i["id"] == item_id)["content"][0]["transcript"] == ""
    # the client's clear afterwards has nothing left to clear
    assert h.send({"type": "output_audio_buffer.clear"}) == []


def test_idle_timer_starts_when_server_playback_stops(make: Callable[..., Harness]) -> None:
    h = make(IDLE, playback="server")
    rid, _ = spoken_answer(h, TWO_PIECES)
    h.s.tick(0.0)
    mic = Mic(h, silence(3000), chunk_ms=100, clock=0.0)
    assert mic.rest() == []  # still playing: no timeout however long
    h.s.playback_stopped(rid)
    assert types(h.take()) == ["output_audio_buffer.stopped"]
    h.s.tick(3.0)
    mic = Mic(h, silence(8000), chunk_ms=100, clock=0.0)
    mic.until(is_type("input_audio_buffer.timeout_triggered"))
    assert abs(mic.at[-1][0] - (3000 + 5000)) <= 100
