"""The browser reads server events as Python does: `web/protocol.js` and `web/conversation.js`
against `parley.protocol`.

The tables come from one source: protocol.js holds parley.protocol's own (beta renames and formats,
change kinds), and no other page module keeps a copy.

The engine's sans-I/O `Session`, in its WebRTC shape (the server plays the audio, as for a page),
is driven through spoken and typed turns, a barge-in, a failed transcription, a tool call, an
out-of-band answer, inserts and deletes. Every event it emits goes, as the JSON a data channel
carries, through both readers, under node and in headless Chromium. After each event both must
report the same changes (kind and fields) and hold the same items, in the same order, with the
same words. The same stream in beta shape, and a hand-written stream of the edge cases (order,
completion, bad input), must read the same way too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.session import ClearPlayback, Session, StartResponse, Transcribe
from parley.engine.speech.vad import VadStream
from parley.protocol import beta
from parley.protocol import changes as ch
from parley.protocol.conversation import ConversationState, Item, Response
from parley.protocol.session import parse_session
from support.js_modules import WEB, Runtime, runtime
from support.speech import speech_pcm24k


@pytest.fixture(scope="module", params=["node", "chromium"])
def js(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    with runtime(request.param) as run:
        yield run


def test_the_browsers_tables_are_pythons(js: Runtime) -> None:
    tables = js("({ protocol }) => ({ renames: protocol.SERVER_RENAMES, formats: protocol.BETA_FORMATS, "
                "kinds: protocol.CHANGE_KINDS })", None)
    assert tables["renames"] == beta.SERVER_RENAMES
    assert tables["formats"] == beta._FORMAT_FROM_BETA
    assert tables["kinds"] == list(ch.CHANGE_KINDS)
    for module in WEB.glob("*.js"):
        if module.name != "protocol.js":
            text = module.read_text()
            assert not any(name in text for name in beta.SERVER_RENAMES), f"{module.name} has its own beta names"


# -- one reading, written twice: what each reader reports after each event ------------------------

def _item(item: Item) -> dict[str, Any]:
    out = {f.name: getattr(item, f.name) for f in fields(Item)}
    return {**out, "text": item.text, "heard_text": item.heard_text, "completed": item.completed}


def _norm(value: Any) -> Any:
    if isinstance(value, Item):
        return _item(value)
    if isinstance(value, Response):
        return {"id": value.id, "out_of_band": value.out_of_band, "status": value.status,
                "metadata": value.metadata, "created_at": value.created_at, "item_ids": value.item_ids}
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def _change(change: ch.Change) -> dict[str, Any]:
    out = {"kind": change.kind, **{f.name: _norm(getattr(change, f.name)) for f in fields(change)}}
    out.pop("reason", None)  # an invalid event's reason is worded by each language
    return out


def read_in_python(events: list[str]) -> list[dict[str, Any]]:
    state = ConversationState()
    steps = []
    for i, raw in enumerate(events):
        changes = state.apply(raw, float(i))
        step = {"changes": [_change(c) for c in changes], "items": [_item(i) for i in state],
                "active": state.active_response_id, "transcribing": state.transcribing}
        steps.append(json.loads(json.dumps(step)))  # as it is now: items change later
    return steps


READ_IN_JS = """({ conversation }, events) => {
  const { ConversationState, Item, Response } = conversation;
  const ITEM_FIELDS = Object.keys(new Item("x"));
  const item = (i) => ({ ...Object.fromEntries(ITEM_FIELDS.map((k) => [k, i[k]])),
    text: i.text, heard_text: i.heard_text, completed: i.completed });
  const norm = (v) => {
    if (v instanceof Item) return item(v);
    if (v instanceof Response) {
      return { id: v.id, out_of_band: v.out_of_band, status: v.status, metadata: v.metadata, created_at: v.created_at,
        item_ids: v.item_ids };
    }
    return Array.isArray(v) ? v.map(norm) : v;
  };
  const state = new ConversationState();
  return events.map((raw, i) => {
    const changes = state.apply(raw, i).map((c) => {
      const out = Object.fromEntries(Object.entries(c).map(([k, v]) => [k, norm(v)]));
      delete out.reason;
      return out;
    });
    const step = { changes, items: state.items.map(item), active: state.activeResponseId, transcribing: state.transcribing };
    return JSON.parse(JSON.stringify(step)); // as it is now: items change later
  });
}"""


def difference(python: Any, browser: Any, path: str = "") -> str | None:
    """Where two readings first differ, and how."""
    if isinstance(python, dict) and isinstance(browser, dict):
        for key in sorted(python.keys() | browser.keys()):
            if key not in python or key not in browser:
                return f"{path}.{key}: only in {'Python' if key in python else 'the browser'}"
            found = difference(python[key], browser[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(python, list) and isinstance(browser, list):
        for i, (p, b) in enumerate(zip(python, browser, strict=False)):
            found = difference(p, b, f"{path}[{i}]")
            if found:
                return found
        return f"{path}: {len(python)} in Python, {len(browser)} in the browser" if len(python) != len(browser) else None
    return None if python == browser else f"{path}: Python {python!r}, the browser {browser!r}"


def assert_same_reading(js: Runtime, events: list[str]) -> list[dict[str, Any]]:
    python, browser = read_in_python(events), js(READ_IN_JS, events)
    for i, (p, b) in enumerate(zip(python, browser, strict=True)):
        order = ([item["id"] for item in p["items"]], [item["id"] for item in b["items"]])
        found = f"order: Python {order[0]}, the browser {order[1]}" if order[0] != order[1] else difference(p, b)
        assert found is None, f"after event {i} ({events[i][:200]}): {found}"
    return python


# -- the engine's stream ------------------------------------------------------------------------------

def tone(ms: float) -> FloatArray:
    t = np.arange(round(ms * SAMPLE_RATE / 1000)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


class WebRtcDriver:
    """Plays the WebRTC runtime's part by hand: the agent's audio counts as queued for playout,
    and every event is kept as the JSON text the data channel would carry."""

    def __init__(self, **config: Any) -> None:
        self.session = Session(parse_session({"type": "realtime", **config}), detector=VadStream(SAMPLE_RATE),
                               now=1_700_000_000.0, playback="server")
        self.events: list[str] = []
        self.played: tuple[str, float] | None = None  # (item id, ms) of the audio now playing

    def pump(self) -> list[Any]:
        effects = []
        while out := self.session.take():
            for thing in out:
                if isinstance(thing, dict):
                    self.events.append(json.dumps(thing))
                elif isinstance(thing, ClearPlayback):
                    item_id, ms = self.played or (None, 0.0)
                    self.played = None
                    self.session.playback_cleared(thing.response_id, item_id, ms)
                else:
                    effects.append(thing)
        return effects

    def send(self, event: dict[str, Any]) -> list[Any]:
        self.session.receive(event)
        return self.pump()

    def speak(self, pcm: FloatArray) -> list[Any]:
        got = []
        for i in range(0, pcm.size, 480):
            self.session.receive_audio(pcm[i:i + 480])
            got += self.pump()
        return got

    def heard(self, got: list[Any], text: str | None, error: str | None = None) -> StartResponse:
        """The transcript of the turn `got` ended (or its failure); the answer it started."""
        job = [e for e in got if isinstance(e, Transcribe)][-1]  # the attempt that covers the turn
        self.session.transcription_result(job.item_id, job.attempt, text, error)
        (start,) = [e for e in got + self.pump() if isinstance(e, StartResponse)]
        return start

    def answer(self, start: StartResponse, pieces: list[tuple[str, float]], *, played: bool = True) -> None:
        for i, (text, ms) in enumerate(pieces):
            self.session.response_text(start.response_id, text if i == 0 else " " + text)
            if ms:
                self.session.response_audio(start.response_id, tone(ms), piece=text)
        item_id = self.session.message_item_id(start.response_id)
        self.session.response_complete(start.response_id)
        if played:
            self.session.playback_stopped(start.response_id)
        elif item_id is not None:
            self.played = (item_id, 1200.0)
        self.pump()


def engine_stream() -> list[str]:
    d = WebRtcDriver(instructions="Be brief.", audio={"input": {
        "transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}})
    d.session.start()
    d.pump()
    # a spoken turn, its transcript, a spoken answer
    got = d.speak(speech_pcm24k("What is the weather like in Paris today", tail_silence_ms=600))
    d.answer(d.heard(got, "What is the weather like in Paris today?"), [("It is sunny.", 600), ("Warm.", 400)])
    # a typed turn, a text answer
    d.send({"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And Rome?"}]}})
    (start,) = d.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    d.answer(start, [("Rome is warm.", 0)])
    # barge-in: the user talks over an answer still playing; the server cuts it where it was heard
    (start,) = d.send({"type": "response.create"})
    d.answer(start, [("Let me tell you about the week ahead.", 1500), ("Monday will be rainy.", 1500)], played=False)
    got = d.speak(speech_pcm24k("Stop, thanks", tail_silence_ms=600))
    # a transcription that fails: the user's turn is complete without words
    d.answer(d.heard(got, None, error="no speech"), [("Sorry?", 300)])
    # a tool call, its output, the answer after it
    (start,) = d.send({"type": "response.create"})
    d.session.response_function_call(start.response_id, "record_outcome", '{"price": 99}', "call_1")
    d.session.response_complete(start.response_id)
    d.pump()
    d.send({"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"recorded": true}'}})
    # an out-of-band answer stays out of the conversation
    (start,) = d.send({"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"],
                                                                "metadata": {"purpose": "summary"}}})
    d.answer(start, [("A side note.", 0)])
    # inserts at the front and in the middle, a delete, a retrieve, a refused cancel, new instructions
    ids = [json.loads(e)["item"]["id"] for e in d.events if json.loads(e)["type"] == "conversation.item.added"]
    (cut,) = [json.loads(e)["item_id"] for e in d.events if json.loads(e)["type"] == "conversation.item.truncated"]
    d.send({"type": "conversation.item.create", "previous_item_id": "root",
            "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Context."}]}})
    d.send({"type": "conversation.item.create", "previous_item_id": ids[0],
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Aside."}]}})
    d.send({"type": "conversation.item.delete", "item_id": ids[1]})
    d.send({"type": "conversation.item.retrieve", "item_id": cut})  # the words that were heard
    d.send({"type": "response.cancel"})
    d.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be kind.",
                                                  "audio": {"input": {"transcription": None}}}})
    d.session.close()
    return d.events


@pytest.fixture(scope="module")
def engine_events() -> list[str]:
    return engine_stream()


def test_the_browser_reads_the_engines_stream_as_python_does(js: Runtime, engine_events: list[str]) -> None:
    steps = assert_same_reading(js, engine_events)
    kinds = {c["kind"] for s in steps for c in s["changes"]}
    # the stream exercises what a page shows: turns, words, a cut answer, playback, errors
    assert {"session_changed", "speech_started", "input_committed", "item_placed", "item_completed",
            "transcript_delta", "item_truncated", "item_retrieved", "item_deleted", "response_started",
            "response_done", "playback_started", "playback_stopped", "error_received"} <= kinds, kinds
    final = steps[-1]["items"]
    assert final[0]["role"] == "system" and "function_call" in [i["type"] for i in final]
    cut = [i for i in final if i["truncated_ms"] is not None]
    assert cut and cut[0]["heard_text"] != cut[0]["text"]
    failed = [i for i in final if i["transcription_failed"]]
    assert failed and failed[0]["completed"]
    assert "A side note." not in [i["text"] for i in final]  # out of band


def test_the_browser_reads_the_beta_stream_as_python_does(js: Runtime, engine_events: list[str]) -> None:
    events = [json.dumps(b) for e in engine_events for b in beta.server_event_to_beta(json.loads(e))]
    assert any(json.loads(e)["type"] in beta.SERVER_RENAMES for e in events)
    assert_same_reading(js, events)


def _msg(item_id: str, role: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": role,
            "content": content}


EDGE_CASES: list[Any] = [
    # a reader that joined late: no session yet, an audio item without a transcript waits
    {"type": "conversation.item.added", "previous_item_id": "item_gone",
     "item": _msg("item_u", "user", [{"type": "input_audio", "transcript": None}])},
    {"type": "conversation.item.added", "item": _msg("item_a", "user", [{"type": "input_text", "text": "a"}])},
    {"type": "session.created", "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "x"}}}}},
    {"type": "response.created", "response": {"id": "resp_1", "conversation_id": "conv_1"}},
    # the answer shows up in its response before the conversation says where it goes
    {"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0,
     "item": _msg("item_b", "assistant", [], "in_progress")},
    {"type": "response.output_audio_transcript.delta", "response_id": "resp_1", "item_id": "item_b", "delta": "Hel"},
    {"type": "conversation.item.added", "previous_item_id": "item_a",
     "item": _msg("item_c", "user", [{"type": "input_text", "text": "c"}])},
    {"type": "conversation.item.added", "previous_item_id": "item_c", "item": _msg("item_b", "assistant", [], "in_progress")},
    # null previous: the first item
    {"type": "conversation.item.added", "previous_item_id": None,
     "item": _msg("item_0", "system", [{"type": "input_text", "text": "0"}])},
    {"type": "response.output_audio_transcript.done", "response_id": "resp_1", "item_id": "item_b", "transcript": "Hello."},
    {"type": "response.done", "response": {"id": "resp_1", "status": "cancelled", "output": [
        _msg("item_b", "assistant", [{"type": "output_audio", "transcript": "Hello."}], "incomplete")],
        "usage": {"input_tokens": 3, "output_tokens": 5}}},
    # a response this reader never saw start, out of band
    {"type": "response.done", "response": {"id": "resp_x", "conversation_id": None, "status": "completed",
                                           "output": [_msg("item_x", "assistant", [{"type": "output_text", "text": "x"}])]}},
    # a transcript, a better pass, the session stops transcribing: the waiting item completes
    {"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_v", "delta": "Hi"},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_u", "transcript": " Hello. "},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_u", "transcript": "Hello!"},
    {"type": "session.updated", "session": {"type": "realtime", "audio": {"input": {"transcription": None}}}},
    {"type": "conversation.item.truncated", "item_id": "item_b", "content_index": 0, "audio_end_ms": 200},
    # OpenAI's copy of a cut answer has no transcript: what was heard stays as estimated
    {"type": "conversation.item.retrieved", "item": _msg("item_b", "assistant", [{"type": "output_audio"}], "incomplete")},
    {"type": "output_audio_buffer.started", "response_id": "resp_1"},
    {"type": "output_audio_buffer.cleared", "response_id": "resp_1"},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "item_w"},
    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_w"},
    {"type": "input_audio_buffer.committed", "previous_item_id": "item_b", "item_id": "item_w"},
    {"type": "input_audio_buffer.cleared"},
    {"type": "error", "error": {"type": "invalid_request_error", "code": "x", "message": "no", "event_id": "e1"}},
    {"type": "some.future.event", "x": 1},
    # bad input: an invalid event, and the state goes on
    "{nope", "[1]", '{"type": 5}', "[" * 5000 + "]" * 5000,
    {"type": "conversation.item.added", "item": "x"},
    {"type": "conversation.item.added", "item": {"content": []}},
    {"type": "response.created", "response": {"id": 5}},
    {"type": "response.output_audio.delta", "delta": 7},
    {"type": "conversation.item.truncated", "item_id": "item_x", "audio_end_ms": "10"},
    {"type": "session.updated", "session": [1]},
    {"type": "conversation.item.added", "item": _msg("item_n", "user", [{"type": "input_text", "text": 5}])},
    {"type": "conversation.item.deleted", "item_id": "item_0"},
]


def test_the_browser_reads_the_edge_cases_as_python_does(js: Runtime) -> None:
    steps = assert_same_reading(js, [e if isinstance(e, str) else json.dumps(e) for e in EDGE_CASES])
    assert [i["id"] for i in steps[-1]["items"]] == ["item_u", "item_a", "item_c", "item_b", "item_w", "item_v", "item_n"]
    assert sum(c["kind"] == "invalid_event" for s in steps for c in s["changes"]) == 10


# -- the call's view: what the pages read (parley.js on the same reading) -----------------------------

CALL_VIEW = """({ parley }, { events, hangUpAfter }) => {
  const call = new parley.RealtimeCall();
  const kinds = [];
  call.addEventListener("changes", (e) => kinds.push(...e.detail.map((c) => c.kind)));
  const steps = [];
  for (const raw of events.slice(0, hangUpAfter ?? events.length)) {
    call._receive(raw);  // as the data channel hands it over
    steps.push(call.state.items.map((i) => ({ id: i.id, role: i.role, kind: i.kind, name: i.name ?? null,
      status: i.status, text: i.text, hidden: Boolean(i.hidden), speaking: Boolean(i.speaking) })));
  }
  if (hangUpAfter !== undefined) call.disconnect();
  const { errors, ignoredErrors, invalidEvents, usage, agentSpeaking, userSpeaking, session } = call.state;
  return { steps, kinds, final: call.state.items, errors, ignoredErrors, invalidEvents, usage, agentSpeaking,
    userSpeaking, voice: session?.audio?.output?.voice ?? null };
}"""


def test_the_call_shows_the_conversation_as_read(js: Runtime, engine_events: list[str]) -> None:
    view = js(CALL_VIEW, {"events": engine_events})
    state = ConversationState()
    kinds: list[str] = []
    completed: set[str] = set()
    for raw, rows in zip(engine_events, view["steps"], strict=True):
        for change in state.apply(raw, 0.0):
            kinds.append(change.kind)
            if isinstance(change, ch.ItemCompleted):
                completed.add(change.item.id)
        shown = [i for i in state if not (i.type == "message" and i.role == "system")]
        spoken = [r for r in rows if r["id"] not in state]
        assert [r["id"] for r in rows] == [i.id for i in shown] + [r["id"] for r in spoken], raw[:200]
        # the user's turn before it is an item: one row, while they speak
        assert all(r["role"] == "user" and r["status"] == "in_progress" for r in spoken), rows
        for row in rows[:len(shown)]:
            assert (row["status"] != "in_progress") == (row["id"] in completed), (raw[:200], row)
    assert view["kinds"] == kinds  # the page gets the protocol's changes, all of them
    assert any(r["speaking"] for rows in view["steps"] for r in rows)

    final = {r["text"]: r for r in view["final"] if r["kind"] == "message"}
    assert final["And Rome?"]["status"] == "completed" and final["And Rome?"]["role"] == "user"
    assert final["(not understood)"]["status"] == "completed"
    cut = [r for r in view["final"] if r["status"] == "interrupted"]
    assert len(cut) == 1 and cut[0]["text"].endswith("Monday will be rainy.")  # all it said, marked cut
    assert cut[0]["heard"].startswith("Let me tell you") and "Monday" not in cut[0]["heard"]
    tools = [r for r in view["final"] if r["role"] == "tool"]
    assert [(t["kind"], t.get("name"), t.get("hidden", False)) for t in tools] == [("function_call", "record_outcome", False),
                                                                   ("function_call_output", None, True)]
    assert tools[0]["text"] == '{"price": 99}'
    # the refused cancel is harmless: counted, not shown; nothing was unreadable
    assert (view["errors"], view["ignoredErrors"], view["invalidEvents"]) == ([], 1, 0)
    assert view["usage"]["responses"] == sum('"type": "response.done"' in e for e in engine_events)
    assert not view["agentSpeaking"] and not view["userSpeaking"] and view["voice"] == "alloy"


def test_hanging_up_ends_the_answer_being_written(js: Runtime, engine_events: list[str]) -> None:
    first_words = next(i for i, e in enumerate(engine_events) if '"response.output_audio_transcript.delta"' in e)
    view = js(CALL_VIEW, {"events": engine_events, "hangUpAfter": first_words + 1})
    writing = view["steps"][-1][-1]
    assert writing["role"] == "assistant" and writing["status"] == "in_progress"
    ended = next(r for r in view["final"] if r["id"] == writing["id"])
    assert ended["status"] == "interrupted" and ended["text"] == writing["text"]


def test_a_turn_that_never_became_an_item_leaves_the_transcript(js: Runtime) -> None:
    events = [{"type": "session.created", "session": {"type": "realtime"}},
              {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_w"},
              {"type": "input_audio_buffer.cleared"},
              {"type": "input_audio_buffer.speech_started", "audio_start_ms": 900, "item_id": "item_x"}]
    view = js(CALL_VIEW, {"events": [json.dumps(e) for e in events], "hangUpAfter": len(events)})
    assert [[(r["id"], r["speaking"]) for r in rows] for rows in view["steps"]] == [
        [], [("item_w", True)], [], [("item_x", True)]]
    assert view["final"] == [] and not view["userSpeaking"]  # hung up while speaking
