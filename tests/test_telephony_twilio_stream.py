"""Twilio Media Streams without I/O: frames checked in order, marks, what the caller heard, tokens, masking."""

from __future__ import annotations

import base64
import json
from typing import Any

from parley.telephony import twilio_stream as ts
from parley.telephony.numbers import mask_number
from parley.telephony.tokens import StreamTokens, Ticket

SID = "MZ0123456789abcdef0123456789abcdef"


def frame(event: str, seq: int | None, sid: str | None = SID, **body: Any) -> str:
    data: dict[str, Any] = {"event": event}
    if seq is not None:
        data["sequenceNumber"] = str(seq)
    if sid is not None:
        data["streamSid"] = sid
    data.update(body)
    return json.dumps(data)


def start_frame(seq: int = 1, **params: str) -> str:
    return frame("start", seq, start={
        "streamSid": SID, "callSid": "CA1", "accountSid": "AC1", "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": params})


def media(seq: int, payload: bytes = b"\xff" * 160, sid: str = SID) -> str:
    return frame("media", seq, sid, media={"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20),
                                          "payload": base64.b64encode(payload).decode()})


def started(**params: str) -> ts.StreamReader:
    reader = ts.StreamReader()
    assert isinstance(reader.feed(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})),
                      ts.Connected)
    start = reader.feed(start_frame(**params))
    assert isinstance(start, ts.Start)
    return reader


def test_a_stream_in_order() -> None:
    reader = ts.StreamReader()
    reader.feed(json.dumps({"event": "connected", "protocol": "Call"}))
    start = reader.feed(start_frame(parley_token="abc"))
    assert isinstance(start, ts.Start)
    assert (start.stream_sid, start.call_sid, start.encoding, start.sample_rate, start.channels) == \
        (SID, "CA1", "audio/x-mulaw", 8000, 1)
    assert start.parameters == {"parley_token": "abc"}
    got = reader.feed(media(2, b"\x01\x02"))
    assert isinstance(got, ts.Media) and got.payload == b"\x01\x02" and got.timestamp_ms == 40
    assert reader.feed(frame("dtmf", 3, dtmf={"track": "inbound_track", "digit": "7"})) == ts.Dtmf("7")
    assert reader.feed(frame("mark", 4, mark={"name": "m1"})) == ts.Mark("m1")
    assert isinstance(reader.feed(frame("stop", 5, stop={"accountSid": "AC1", "callSid": "CA1"})), ts.Stop)
    assert reader.counts == {}


def test_bad_frames_are_named_and_change_nothing() -> None:
    reader = ts.StreamReader()
    assert reader.feed(media(1)) == ts.Bad("before_start", "media")
    reader = started()
    cases: list[tuple[str | bytes, str]] = [
        (b"\x00binary", "binary"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ("x" * (ts.MAX_FRAME_CHARS + 1), "oversized"),
        (frame("hello", 9), "unknown_event"),
        (media(1), "out_of_order"),  # sequence 1 was the start
        (media(9, sid="MZother"), "unknown_stream"),
        (start_frame(9), "out_of_order"),  # a second start
        (json.dumps({"event": "connected"}), "out_of_order"),
        (media(9, b"\x00" * (ts.MAX_MEDIA_BYTES + 100)), "oversized_media"),
        (frame("media", 9, media={"payload": "!!!not base64"}), "invalid_media"),
        (frame("media", 9, media={"payload": "AAAA", "track": "outbound"}), "invalid_media"),
        (frame("dtmf", 9, dtmf={"digit": "x"}), "invalid_dtmf"),
        (frame("mark", 9, mark={}), "invalid_mark"),
        (frame("media", "seven", media={"payload": "AAAA"}), "out_of_order"),  # type: ignore[arg-type]
    ]
    for message, reason in cases:
        got = reader.feed(message)
        assert isinstance(got, ts.Bad) and got.reason == reason, (message[:80], got)
    # none of them moved the sequence on: the next good frame is accepted
    assert isinstance(reader.feed(media(2)), ts.Media)
    assert sum(reader.counts.values()) == len(cases)
    reader.feed(frame("stop", 3))
    assert reader.feed(media(4)) == ts.Bad("after_stop", "media")


def test_start_needs_a_stream_id() -> None:
    reader = ts.StreamReader()
    got = reader.feed(json.dumps({"event": "start", "sequenceNumber": "1", "start": {"callSid": "CA1"}}))
    assert isinstance(got, ts.Bad) and got.reason == "invalid_start"
    assert reader.stream_sid is None


def test_outbound_frames() -> None:
    frames = [json.loads(f) for f in ts.media_frames(SID, bytes(range(200)) + b"\x00" * 200)]
    assert [len(base64.b64decode(f["media"]["payload"])) for f in frames] == [160, 160, 80]
    assert all(f["event"] == "media" and f["streamSid"] == SID for f in frames)
    assert json.loads(ts.mark_frame(SID, "m1")) == {"event": "mark", "streamSid": SID, "mark": {"name": "m1"}}
    assert json.loads(ts.clear_frame(SID)) == {"event": "clear", "streamSid": SID}


def test_heard_position_from_the_echoed_marks() -> None:
    p = ts.Playout()
    assert not p.playing
    m1 = p.queued("item_a", 800)  # 100 ms
    m2 = p.queued("item_a", 800)
    m3 = p.queued("item_a", 400)
    assert p.playing and p.sent_ms("item_a") == 250
    assert p.played(m1) and p.heard_ms("item_a") == 100
    assert not p.played("m999")  # unknown: nothing changes
    cuts = p.interrupt()
    assert cuts == [ts.Cut("item_a", 100)]
    assert not p.playing
    # Twilio echoes the cleared marks after a clear: recognised, ignored
    assert not p.played(m2) and not p.played(m3)
    assert p.heard_ms("item_a") == 100


def test_a_later_mark_confirms_the_earlier_ones_and_items_are_cut_separately() -> None:
    p = ts.Playout()
    p.queued("a", 800)
    a2 = p.queued("a", 800)
    p.queued("b", 800)
    p.queued("b", 800)
    assert p.played(a2) and p.heard_ms("a") == 200
    assert p.interrupt() == [ts.Cut("b", 0)]  # a was heard to its end: nothing to cut there
    p.queued("c", 160)
    m = p.queued("c", 160)
    assert p.played(m) and not p.playing
    assert p.interrupt() == []


async def test_stream_tokens_are_one_time_and_expire() -> None:
    now = [100.0]
    tokens = StreamTokens(ttl=60, clock=lambda: now[0])
    ticket = Ticket(persona="negotiator/sarah", caller="+15551234567", called="+15557654321", call_sid="CA1")
    token = await tokens.issue(ticket)
    assert len(token) >= 32
    assert await tokens.take(token) == ticket
    assert await tokens.take(token) is None  # used
    assert await tokens.take(None) is None and await tokens.take("made-up") is None
    assert await tokens.take("x" * 10_000) is None
    late = await tokens.issue(ticket)
    now[0] += 61
    assert await tokens.take(late) is None  # expired
    small = StreamTokens(max_tokens=3, clock=lambda: now[0])
    first = await small.issue(ticket)
    for _ in range(3):
        await small.issue(ticket)
    assert len(small) == 3 and await small.take(first) is None  # the oldest made room


def test_numbers_are_masked() -> None:
    assert mask_number("+15551234567") == "+•••••••••67"
    assert mask_number("5551234") == "•••••34"
    assert mask_number("+1") == "+•"
    assert mask_number("") is None and mask_number(None) is None
