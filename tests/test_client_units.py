"""The client's parts that need no server: tool schemas and calls, conversation ordering from
events, playback accounting, backoff, keys, usage."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import BaseModel

from parley.client import AudioPlayer, RealtimeClient, ReconnectPolicy, Tool, function_schema
from parley.client.events import AudioDelta, ErrorEvent, ResponseEvent, ServerEvent, wrap
from parley.client.policy import Key, key_from, resolve_key
from parley.protocol import events as ev
from parley.protocol.pricing import DEFAULT_TABLE

# -- tools ---------------------------------------------------------------------------------------


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str | None = None


@dataclass
class Window:
    start: str
    days: int = 1


def forecast(place: Place, window: Window, unit: Unit = Unit.C, detail: Literal["short", "long"] = "short",
             tags: list[str] | None = None, limit: int = 3) -> dict[str, Any]:
    """The weather forecast for a place.

    More words about it.

    Args:
        place: Where to look.
        window: Which days,
            starting when.
        unit: Temperature unit.
    """
    return {"city": place.city, "days": window.days, "unit": unit.value, "detail": detail, "limit": limit}


def test_schema_from_type_hints_and_docstring() -> None:
    definition, _ = function_schema(forecast)
    assert definition["type"] == "function" and definition["name"] == "forecast"
    assert definition["description"] == "The weather forecast for a place. More words about it."
    params = definition["parameters"]
    assert params["type"] == "object"
    assert set(params["required"]) == {"place", "window"}
    props = params["properties"]
    assert props["limit"] == {"type": "integer", "default": 3}
    assert props["detail"]["enum"] == ["short", "long"]
    assert props["window"]["description"] == "Which days, starting when."
    assert props["place"]["description"] == "Where to look."
    defs = params["$defs"]
    assert defs["Place"]["properties"]["city"] == {"type": "string"}
    assert defs["Unit"]["enum"] == ["celsius", "fahrenheit"]
    assert "title" not in json.dumps(params)  # titles are noise for the model


async def test_tool_calls_validate_and_errors_become_outputs() -> None:
    tool = Tool(forecast)
    ok = await tool.run(json.dumps({"place": {"city": "Oslo"}, "window": {"start": "mon", "days": 2},
                                    "unit": "fahrenheit", "limit": "5"}))
    assert ok.error is None
    assert json.loads(ok.output) == {"city": "Oslo", "days": 2, "unit": "fahrenheit", "detail": "short", "limit": 5}
    bad_json = await tool.run("{nope")
    assert bad_json.error and "not valid JSON" in json.loads(bad_json.output)["error"]
    missing = await tool.run(json.dumps({"place": {"city": "Oslo"}}))
    assert missing.error and "window" in missing.error
    wrong = await tool.run(json.dumps({"place": {"city": "Oslo"}, "window": {"start": "x"}, "detail": "huge"}))
    assert wrong.error and "detail" in wrong.error
    not_object = await tool.run("[1]")
    assert not_object.error == "The arguments must be a JSON object."

    def explode(x: int) -> str:
        raise RuntimeError(f"boom {x}")

    failed = await Tool(explode).run('{"x": 4}')
    assert json.loads(failed.output) == {"error": "explode failed: RuntimeError: boom 4"}

    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    timed_out = await Tool(slow, timeout=0.05).run("")
    assert timed_out.error and "did not finish" in timed_out.error

    main = asyncio.get_running_loop()

    def in_thread() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False

    threaded = await Tool(in_thread).run("{}")
    assert threaded.output == "true"  # sync tools run off the event loop
    assert main is asyncio.get_running_loop()


# -- conversation state from events ---------------------------------------------------------------


def feed(client: RealtimeClient, *events: dict[str, Any]) -> None:
    for event in events:
        client.feed(json.dumps(event))


def message(item_id: str, role: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": role,
            "content": content}


async def test_items_are_ordered_by_previous_item_id_and_transcripts_assembled() -> None:
    client = RealtimeClient(base_url="http://127.0.0.1:9", api_key="sk")
    feed(client, ev.session_created({"id": "sess_1", "model": "gpt-realtime", "audio": {"input": {
        "transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad"}}}}))
    messages: list[Any] = []
    deltas: list[Any] = []
    client.on("message", messages.append)
    client.on("transcript_delta", deltas.append)
    feed(client,
         ev.input_audio_buffer_speech_started(100, "item_u1"),
         ev.input_audio_buffer_speech_stopped(1900, "item_u1"),
         ev.input_audio_buffer_committed("item_u1", None),
         ev.conversation_item_added(message("item_u1", "user", [{"type": "input_audio", "transcript": None}]), None),
         ev.response_created({"id": "resp_1", "object": "realtime.response", "status": "in_progress", "output": [],
                              "conversation_id": "conv_1", "metadata": None, "usage": None}),
         # the assistant's item shows up in the response before the conversation says where it goes
         {"type": "response.output_item.added", "event_id": "e1", "response_id": "resp_1", "output_index": 0,
          "item": message("item_a1", "assistant", [], "in_progress")},
         {"type": "response.output_audio_transcript.delta", "event_id": "e2", "response_id": "resp_1",
          "item_id": "item_a1", "output_index": 0, "content_index": 0, "delta": "Hi "},
         # an item inserted at the front arrives meanwhile (another client's conversation.item.create)
         ev.conversation_item_added(message("item_s0", "system", [{"type": "input_text", "text": "Be kind."}]),
                                    None),
         ev.conversation_item_added(message("item_a1", "assistant", [], "in_progress"), "item_u1"),
         {"type": "response.output_audio_transcript.delta", "event_id": "e3", "response_id": "resp_1",
          "item_id": "item_a1", "output_index": 0, "content_index": 0, "delta": "there."},
         {"type": "response.output_audio.delta", "event_id": "e4", "response_id": "resp_1", "item_id": "item_a1",
          "output_index": 0, "content_index": 0, "delta": base64.b64encode(bytes(4800)).decode()},
         # the user's words come after the answer started: they still go first
         {"type": "conversation.item.input_audio_transcription.delta", "event_id": "e5", "item_id": "item_u1",
          "content_index": 0, "delta": "Hello"},
         {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e6", "item_id": "item_u1",
          "content_index": 0, "transcript": "Hello!", "usage": {"type": "duration", "seconds": 1.8}},
         ev.conversation_item_done(message("item_a1", "assistant", [{"type": "output_audio",
                                                                    "transcript": "Hi there."}]), "item_u1"),
         ev.response_done({"id": "resp_1", "object": "realtime.response", "status": "completed",
                           "conversation_id": "conv_1", "metadata": None,
                           "output": [message("item_a1", "assistant", [{"type": "output_audio",
                                                                        "transcript": "Hi there."}])],
                           "usage": {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
                                     "input_token_details": {"text_tokens": 5, "audio_tokens": 15,
                                                             "cached_tokens": 0},
                                     "output_token_details": {"text_tokens": 2, "audio_tokens": 8}}}),
         ev.conversation_item_deleted("item_s0"))
    assert client.conversation.ids == ["item_u1", "item_a1"]
    assert client.conversation.messages() == [("user", "Hello!"), ("assistant", "Hi there.")]
    assert client.conversation.transcript() == "user: Hello!\nassistant: Hi there."
    user = client.conversation["item_u1"]
    assert (user.speech_start_ms, user.speech_end_ms) == (100, 1900)
    assert client.conversation["item_a1"].audio_ms == 100
    assert [(m.role, m.text) for m in messages] == [("system", "Be kind."), ("user", "Hello!"),
                                                    ("assistant", "Hi there.")]
    assert [(d.role, d.text) for d in deltas] == [("assistant", "Hi "), ("assistant", "Hi there."), ("user", "Hello")]
    usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
             "input_token_details": {"text_tokens": 5, "audio_tokens": 15, "cached_tokens": 0},
             "output_token_details": {"text_tokens": 2, "audio_tokens": 8}}
    expected = DEFAULT_TABLE.response_cost("gpt-realtime", usage) + DEFAULT_TABLE.transcription_cost(
        "whisper-1", {"type": "duration", "seconds": 1.8})
    assert client.cost == pytest.approx(expected) and client.cost > 0
    assert client.usage.output_audio_tokens == 8 and client.usage.transcription_seconds == 1.8
    turn = client.latencies[0]
    assert turn.trigger == "speech" and turn.first_audio_ms is not None and turn.done_ms is not None


def test_typed_events_are_lazy_views() -> None:
    data = {"type": "response.output_audio.delta", "delta": base64.b64encode(b"\x01\x00").decode(),
            "item_id": "i", "response_id": "r", "extra": 1}
    event = wrap(data)
    assert isinstance(event, AudioDelta) and event.audio == b"\x01\x00" and event.extra == 1
    assert event["item_id"] == "i" and event.get("missing") is None
    with pytest.raises(AttributeError):
        _ = event.missing
    done = wrap({"type": "response.done", "response": {"id": "r", "status": "cancelled", "usage": None}})
    assert isinstance(done, ResponseEvent) and done.status == "cancelled" and done.usage is None
    assert type(wrap({"type": "brand.new.event"})) is ServerEvent
    err = ErrorEvent.client("x", "y")
    assert err.code == "x" and err.message == "y" and str(err) == "x: y"


# -- playback ------------------------------------------------------------------------------------------


def test_player_counts_what_was_played_and_clears_at_once() -> None:
    player = AudioPlayer("clock")
    player.feed(bytes(48 * 1000), "a")  # 1 s
    player.feed(bytes(48 * 1000), "b")
    time.sleep(0.3)
    played = player.played_ms("a")
    assert 280 <= played <= 420, played
    assert player.queued_ms == pytest.approx(2000 - played, abs=30)
    item, heard = player.clear()
    assert item == "a" and abs(heard - played) < 60
    assert player.queued_ms == 0 and player.played_ms("b") == 0
    # an output device pulls: silence when the queue runs dry
    device = AudioPlayer("clock")
    device.output = "device"  # drive it by hand, as a sounddevice callback would
    device.feed(b"\x01\x00" * 10, "c")
    assert device.pull(8) == b"\x01\x00" * 4
    assert device.pull(16) == b"\x01\x00" * 6 + bytes(4)
    assert device.played_ms("c") == pytest.approx(20 / 48)


# -- backoff and keys ------------------------------------------------------------------------------------


def test_backoff_schedule_and_jitter() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, factor=2, max_delay=3, jitter=0.25)
    assert policy.schedule(5) == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(500)]
    assert 1.5 <= min(delays) < 1.6 and 2.4 < max(delays) <= 2.5
    assert ReconnectPolicy(jitter=0).delay(2) == 0.2
    assert not ReconnectPolicy.disabled().enabled


async def test_key_providers_may_return_any_secret_shape() -> None:
    assert key_from("ek_1") == Key("ek_1")
    assert key_from({"value": "ek_2", "expires_at": 5}) == Key("ek_2", 5.0)
    assert key_from({"client_secret": {"value": "ek_3", "expires_at": 6}}).value == "ek_3"

    class SdkSecret:
        value = "ek_4"
        expires_at = 7

    assert key_from(SdkSecret()) == Key("ek_4", 7.0)

    async def provider() -> str:
        return "ek_5"

    assert (await resolve_key(provider)).ephemeral
    assert Key("ek", time.time() + 1).expiring() and not Key("sk").expiring()
    with pytest.raises(TypeError):
        key_from(5)


async def test_audio_at_any_rate_is_resampled_to_24k() -> None:
    client = RealtimeClient(base_url="http://127.0.0.1:9", api_key="sk")
    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32) * 0.5
    out = b"".join(client._audio.to_pcm24k(tone[i:i + 960], 48000) for i in range(0, tone.size, 960))
    assert 0 <= 24000 - len(out) // 2 < 1000  # soxr holds back its filter delay (~30 ms) until more comes
    ints = (tone * 32767).astype(np.int16)
    assert len(client._audio.to_pcm24k(ints[:480], 24000)) == 960
    # PCM16 bytes split mid-sample are stitched back together
    raw = ints[:100].astype("<i2").tobytes()
    assert client._audio.to_pcm24k(raw[:51], 24000) + client._audio.to_pcm24k(raw[51:], 24000) == raw
    stereo = np.stack([tone[:480], tone[:480]], axis=1)
    assert len(client._audio.to_pcm24k(stereo, 24000)) == 960
