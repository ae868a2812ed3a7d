"""`parley.protocol.ConversationState`: the one reading of server events.

The first test has the producer and the consumer of the protocol check each other: the engine's
sans-I/O `Session` is driven through speech and text turns, barge-in, truncation, out-of-band
responses, inserts and deletes, and every event it emits goes into a `ConversationState`. Both
must then hold the same items, in the same order, with the same words. The rest pin the reading
rules one by one.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.session import CancelResponse, Session, StartResponse, Transcribe
from parley.engine.speech.vad import VadStream
from parley.protocol import changes as ch
from parley.protocol import events as ev
from parley.protocol.conversation import ConversationState
from parley.protocol.items import item_text
from parley.protocol.server_events import InvalidServerEvent, read_server_event
from parley.protocol.session import parse_session
from support.speech import speech_pcm24k

Event = dict[str, Any]


def tone(ms: float) -> FloatArray:
    t = np.arange(round(ms * SAMPLE_RATE / 1000)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


class Driver:
    """Plays the engine runtime's part by hand, and reads every event it sends."""

    def __init__(self, **config: Any) -> None:
        self.session = Session(parse_session({"type": "realtime", **config}), detector=VadStream(SAMPLE_RATE),
                               now=1_700_000_000.0)
        self.state = ConversationState()
        self.changes: list[ch.Change] = []
        self.effects: list[Any] = []
        self.events: list[Event] = []  # every server event, in order
        self.clock = 0.0

    def pump(self) -> list[Any]:
        effects = []
        for out in self.session.take():
            if isinstance(out, dict):
                self.clock += 0.001
                self.events.append(out)
                self.changes += self.state.apply(out, self.clock)
            else:
                effects.append(out)
        self.effects += effects
        return effects

    def send(self, event: Event) -> list[Any]:
        self.session.receive(event)
        return self.pump()

    def speak(self, pcm: FloatArray) -> list[Any]:
        got = []
        for i in range(0, pcm.size, 480):
            self.session.receive_audio(pcm[i:i + 480])
            got += self.pump()
        return got

    def answer(self, start: StartResponse, pieces: list[tuple[str, float]], *, complete: bool = True) -> None:
        for i, (text, ms) in enumerate(pieces):
            self.session.response_text(start.response_id, text if i == 0 else " " + text)
            self.session.response_audio(start.response_id, tone(ms), piece=text)
        if complete:
            self.session.response_complete(start.response_id)
        self.pump()

    def agree(self) -> None:
        engine_items = self.session.items
        assert self.state.ids == [i["id"] for i in engine_items]
        for wire in engine_items:
            mine = self.state[wire["id"]]
            words = mine.heard_text if mine.truncated_ms is not None else mine.text
            assert words == item_text(wire), wire["id"]
            assert (mine.type, mine.role) == (wire["type"], wire.get("role"))


def only(effects: list[Any], kind: type) -> Any:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


def test_the_engine_and_the_reader_agree_on_every_turn() -> None:
    d = Driver(instructions="Be brief.",
               audio={"input": {"transcription": {"model": "whisper-1"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}})
    d.session.start()
    d.pump()
    # a spoken turn: VAD commits, the transcript comes back, the answer is spoken
    got = d.speak(speech_pcm24k("What is the weather like in Paris today", tail_silence_ms=600))
    job = [e for e in got if isinstance(e, Transcribe)][-1]  # the attempt that covers the turn
    d.session.transcription_result(job.item_id, job.attempt, "What is the weather like in Paris today?")
    start = only(d.pump() + got, StartResponse)
    d.answer(start, [("It is sunny.", 600), ("Twenty degrees.", 700)])
    d.agree()
    # a typed turn and a text-only answer
    d.send({"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And Rome?"}]}})
    start = only(d.send({"type": "response.create", "response": {"output_modalities": ["text"]}}), StartResponse)
    d.answer(start, [("Rome is warm.", 0)])
    d.agree()
    # barge-in: the user talks over a long answer, the client truncates at what it played
    start = only(d.send({"type": "response.create"}), StartResponse)
    d.answer(start, [("Let me tell you about the week ahead.", 1500), ("Monday will be rainy.", 1500)],
             complete=False)
    spoken = d.state.last("assistant")
    assert spoken is not None and spoken.audio_ms > 2000
    got = d.speak(speech_pcm24k("Stop, thanks", tail_silence_ms=600))
    assert any(isinstance(e, CancelResponse) for e in got)
    d.send({"type": "conversation.item.truncate", "item_id": spoken.id, "content_index": 0, "audio_end_ms": 1200})
    d.send({"type": "conversation.item.retrieve", "item_id": spoken.id})
    job = [e for e in got if isinstance(e, Transcribe)][-1]  # the attempt that covers the turn
    d.session.transcription_result(job.item_id, job.attempt, "Stop, thanks.")
    start = only(d.pump() + got, StartResponse)
    d.answer(start, [("Sure.", 300)])
    truncated = d.state[spoken.id]
    assert truncated.text.endswith("Monday will be rainy.")
    assert truncated.text.startswith(truncated.heard_text) and "Monday" not in truncated.heard_text
    d.agree()
    # an out-of-band answer stays out of the conversation
    before = d.state.ids
    start = only(d.send({"type": "response.create", "response": {"conversation": "none",
                                                                  "output_modalities": ["text"]}}), StartResponse)
    d.answer(start, [("A side note.", 0)])
    assert d.state.ids == before
    done = [c for c in d.changes if isinstance(c, ch.ResponseDone)][-1]
    assert done.response.out_of_band and [i.text for i in done.output] == ["A side note."]
    # inserts at the front and in the middle, and deletes
    d.send({"type": "conversation.item.create", "previous_item_id": "root",
            "item": {"type": "message", "role": "system", "id": "item_first",
                     "content": [{"type": "input_text", "text": "Context."}]}})
    d.send({"type": "conversation.item.create", "previous_item_id": before[0],
            "item": {"type": "message", "role": "user", "id": "item_mid",
                     "content": [{"type": "input_text", "text": "Aside."}]}})
    d.send({"type": "conversation.item.delete", "item_id": before[1]})
    d.agree()
    assert d.state.ids[:3] == ["item_first", before[0], "item_mid"]
    d.session.close()


def test_a_reader_that_missed_events_fills_the_gap_by_retrieving() -> None:
    d = Driver(audio={"input": {"transcription": {"model": "whisper-1"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}})
    d.session.start()
    d.pump()
    got = d.speak(speech_pcm24k("What is the weather like in Paris today", tail_silence_ms=600))
    user1 = d.state.last("user")
    assert user1 is not None
    gap = len(d.events)  # the late reader saw the turn placed, then nothing until...
    job = [e for e in got if isinstance(e, Transcribe)][-1]
    d.session.transcription_result(job.item_id, job.attempt, "What is the weather like in Paris today?")
    d.answer(only(d.pump() + got, StartResponse), [("It is sunny.", 600)])
    d.send({"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And Rome?"}]}})
    d.answer(only(d.send({"type": "response.create"}), StartResponse), [("Rome is warm.", 500)])
    answer2 = d.state.last("assistant")
    back = len(d.events)  # ...here: a third turn names the second answer as its previous item
    d.send({"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks."}]}})
    late = ConversationState()
    apply_all(late, *d.events[:gap], *d.events[back:])
    assert late[user1.id].text == "" and answer2 is not None and answer2.id not in late
    # the engine answers a retrieve as OpenAI does: the item, with its audio and transcript (and, a
    # Parley extension the reader leaves to the recorder, the item's previous one)
    mark = len(d.events)
    d.send({"type": "conversation.item.retrieve", "item_id": user1.id})
    d.send({"type": "conversation.item.retrieve", "item_id": answer2.id})
    retrieved = d.events[mark:]
    assert [e["type"] for e in retrieved] == ["conversation.item.retrieved"] * 2
    assert all(set(e) == {"type", "event_id", "item", "previous_item_id"} for e in retrieved)
    assert retrieved[1]["previous_item_id"] == d.state.ids[d.state.ids.index(answer2.id) - 1]
    retrieved = [{k: v for k, v in e.items() if k != "previous_item_id"} for e in retrieved]  # as OpenAI's
    part = retrieved[0]["item"]["content"][0]
    assert part["type"] == "input_audio" and part["transcript"] == "What is the weather like in Paris today?"
    assert part["audio"]
    out = apply_all(late, *retrieved)
    done = {c.item.id: c.text for c in out if isinstance(c, ch.ItemCompleted)}
    assert done == {user1.id: "What is the weather like in Paris today?", answer2.id: "Rome is warm."}
    # the named item goes before the item that named it; the gap's earlier items are beyond reach
    full = d.state.ids
    assert late.ids == [full[0], full[3], full[4]] and full[0] == user1.id and full[3] == answer2.id
    assert not [c for c in apply_all(late, *retrieved) if isinstance(c, ch.ItemCompleted | ch.ItemPlaced)]
    d.session.close()


def _msg(item_id: str, role: str, content: list[Event], status: str = "completed") -> Event:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": role,
            "content": content}


def apply_all(state: ConversationState, *events: Event) -> list[ch.Change]:
    out: list[ch.Change] = []
    for event in events:
        out += state.apply(event, 0.0)
    return out


def test_a_users_audio_completes_when_its_transcript_comes() -> None:
    state = ConversationState()
    apply_all(state, ev.session_created({"type": "realtime", "audio": {"input": {"transcription": {"model": "x"}}}}))
    out = apply_all(state, ev.input_audio_buffer_speech_started(100, "item_u"),
                    ev.input_audio_buffer_speech_stopped(900, "item_u"),
                    ev.input_audio_buffer_committed("item_u", None),
                    ev.conversation_item_added(_msg("item_u", "user", [{"type": "input_audio", "transcript": None}]),
                                               None))
    assert not [c for c in out if isinstance(c, ch.ItemCompleted)]
    assert (state["item_u"].speech_start_ms, state["item_u"].speech_end_ms) == (100, 900)
    out = apply_all(state, ev.conversation_item_input_audio_transcription_completed(
        "item_u", " Hello. ", {"type": "duration", "seconds": 0.8}))
    (done,) = [c for c in out if isinstance(c, ch.ItemCompleted)]
    assert (done.text, done.first, done.usage) == ("Hello.", True, {"type": "duration", "seconds": 0.8})
    # a better pass with other words completes it again; the same words do not
    out = apply_all(state, ev.conversation_item_input_audio_transcription_completed("item_u", "Hello!", {}))
    assert [(c.text, c.first) for c in out if isinstance(c, ch.ItemCompleted)] == [("Hello!", False)]
    assert not apply_all(state, ev.conversation_item_input_audio_transcription_completed("item_u", "Hello!", {}))[1:]


def test_without_transcription_a_users_audio_is_complete_at_once() -> None:
    state = ConversationState()
    apply_all(state, ev.session_created({"type": "realtime", "audio": {"input": {"transcription": None}}}))
    out = apply_all(state, ev.input_audio_buffer_committed("item_u", None),
                    ev.conversation_item_added(_msg("item_u", "user", [{"type": "input_audio", "transcript": None}]),
                                               None))
    assert [(c.item.id, c.text) for c in out if isinstance(c, ch.ItemCompleted)] == [("item_u", "")]


def test_order_follows_previous_item_id_not_arrival() -> None:
    state = ConversationState()
    apply_all(state,
              ev.conversation_item_added(_msg("item_a", "user", [{"type": "input_text", "text": "a"}]), None),
              ev.response_created(ev.response_object("resp_1", conversation_id="conv_1")),
              # the answer shows up in its response before the conversation says where it goes
              ev.response_output_item_added("resp_1", 0, _msg("item_b", "assistant", [], "in_progress")),
              ev.conversation_item_added(_msg("item_c", "user", [{"type": "input_text", "text": "c"}]), "item_a"),
              ev.conversation_item_added(_msg("item_b", "assistant", [], "in_progress"), "item_c"),
              # null previous: the first item
              ev.conversation_item_added(_msg("item_0", "system", [{"type": "input_text", "text": "0"}]), None))
    assert state.ids == ["item_0", "item_a", "item_c", "item_b"]
    assert state.active_response_id == "resp_1"


def test_truncation_knows_what_was_heard() -> None:
    state = ConversationState()
    audio = base64.b64encode(bytes(48 * 1000)).decode()  # 1 s at 24 kHz
    apply_all(state,
              ev.response_created(ev.response_object("resp_1", conversation_id="conv_1")),
              ev.response_output_item_added("resp_1", 0, _msg("item_b", "assistant", [], "in_progress")),
              ev.response_output_audio_transcript_delta("resp_1", "item_b", 0, 0, "one two three four"),
              ev.response_output_audio_delta("resp_1", "item_b", 0, 0, audio))
    (cut,) = apply_all(state, ev.conversation_item_truncated("item_b", 0, 500))
    assert isinstance(cut, ch.ItemTruncated) and (cut.heard, cut.said) == ("one two", "one two three four")
    apply_all(state, ev.conversation_item_retrieved(_msg("item_b", "assistant",
                                                         [{"type": "output_audio", "transcript": "one two three"}])))
    assert state.heard_text("item_b") == "one two three" and state.item_text("item_b") == "one two three four"


def test_connection_lost_ends_what_was_being_written() -> None:
    state = ConversationState()
    apply_all(state, ev.response_created(ev.response_object("resp_1", conversation_id="conv_1")),
              ev.response_output_item_added("resp_1", 0, _msg("item_b", "assistant", [], "in_progress")),
              ev.response_output_text_delta("resp_1", "item_b", 0, 0, "Half a"))
    out = state.connection_lost("disconnected")
    assert [type(c) for c in out] == [ch.ItemCompleted, ch.ResponseDone]
    assert out[0].item.status == "incomplete" and out[0].text == "Half a"
    assert state.active_response_id is None and not state.responses


def test_bad_input_is_an_invalid_event_and_the_state_goes_on() -> None:
    state = ConversationState()
    for raw in ("{nope", "[1]", '{"type": 5}', "[" * 5000 + "]" * 5000):
        (out,) = state.apply(raw, 0.0)
        assert isinstance(out, ch.InvalidEvent)
    bad = [{"type": "conversation.item.added", "item": "x"},
           {"type": "conversation.item.added", "item": {"content": []}},
           {"type": "response.created", "response": {"id": 5}},
           {"type": "response.output_audio.delta", "delta": 7},
           {"type": "conversation.item.truncated", "item_id": "item_x", "audio_end_ms": "10"},
           {"type": "session.updated", "session": [1]}]
    for event in bad:
        assert any(isinstance(c, ch.InvalidEvent) for c in state.apply(event, 0.0)), event
    apply_all(state, ev.conversation_item_added(_msg("item_a", "user", [{"type": "input_text", "text": 5}]), None))
    assert state.item_text("item_a") == ""
    assert isinstance(read_server_event(b"\xff"), InvalidServerEvent)


def test_beta_events_are_read_as_ga() -> None:
    state = ConversationState()
    out = apply_all(state,
                    {"type": "conversation.item.created", "previous_item_id": None,
                     "item": {"id": "item_b", "type": "message", "role": "assistant", "status": "completed",
                              "content": [{"type": "text", "text": "Hi."}]}},
                    {"type": "response.text.delta", "response_id": "r", "item_id": "item_b", "delta": "!"})
    assert [c.kind for c in out] == ["item_placed", "item_completed", "transcript_delta"]
    assert state["item_b"].content == [{"type": "output_text", "text": "Hi."}]
    assert read_server_event('{"type": "response.audio.delta", "delta": ""}').type == "response.output_audio.delta"
