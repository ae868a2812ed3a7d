"""The call recorder on a real SQLite file: whatever events arrive, it never raises, and what it
stores follows the conversation; bad events are counted, not swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.protocol import events as ev
from parley.protocol import items
from parley.protocol.pricing import DEFAULT_TABLE
from parley.server.db import Store
from parley.server.metrics import Metrics
from parley.server.recorder import Recorder
from support.recorder_events import event
from support.server import make_settings, running_server


def test_the_recorder_never_raises_and_stores_in_conversation_order(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}")
    loop.run_until_complete(store.start())
    calls = iter(range(10**6))

    @given(st.lists(event, min_size=1, max_size=16))
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def record(events: list[dict[str, Any]]) -> None:
        call_id = f"call_{next(calls)}"

        async def run() -> None:
            await store.create_call(id=call_id, user_id="u", kind="direct", persona="negotiator/sarah",
                                    persona_name="Sarah", model="gpt-realtime")
            recorder = Recorder(store, call_id, persona="negotiator/sarah", model="gpt-realtime",
                                transcription_model="whisper-1", prices=DEFAULT_TABLE, metrics=Metrics())
            for e in events:
                await recorder.handle(e)  # must not raise
            await recorder.flush()
            stored = await store.items(call_id)
            order = recorder.state.ids
            live = [i.item_id for i in stored if i.item_id in order]
            assert live == sorted(live, key=order.index)  # speech order, whatever the arrival order

        loop.run_until_complete(run())

    try:
        record()
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(make_settings(tmp_path_factory.mktemp("recorder"))) as url:
        yield url


async def test_a_malformed_output_list_still_stores_the_usage(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        call = (await client.post("/api/session", json={})).json()
        usage = ev.usage(input_text=20, output_text=10, output_audio=40)
        response = ev.response_object("resp_1", status="completed", conversation_id="conv_1", usage=usage)
        response["output"] = True  # not a list: the output is unreadable, the usage is not
        r = await client.post(call["events_url"], json={"events": [
            ev.response_created(ev.response_object("resp_1", conversation_id="conv_1")), ev.response_done(response)]})
        assert r.status_code == 200, r.text
        detail = (await client.get(f"/api/calls/{call['call_id']}")).json()
        assert [x["ref_id"] for x in detail["responses"]] == ["resp_1"]
        assert detail["cost_usd"] == pytest.approx(DEFAULT_TABLE.response_cost("gpt-realtime", usage))


async def test_invalid_events_are_counted(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        call = (await client.post("/api/session", json={})).json()
        before = _invalid((await client.get("/metrics")).text)
        r = await client.post(call["events_url"], json={"events": [
            {"type": "conversation.item.added", "item": "not an item"},
            {"type": "response.created", "response": {"id": 5}}]})
        assert r.status_code == 200 and r.json()["ignored"] == 2, r.text
        assert _invalid((await client.get("/metrics")).text) == before + 2


def _invalid(metrics: str) -> float:
    lines = [line for line in metrics.splitlines() if line.startswith("parley_invalid_events_total")]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_a_transcript_write_that_fails_is_counted_and_the_call_goes_on(tmp_path: Path) -> None:
    """Transcript writes are queued, not awaited one by one: one that fails later is counted and
    logged, and the recorder carries on."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'fail.db'}")
    await store.start()
    metrics = Metrics()
    try:
        recorder = Recorder(store, "call_not_on_record", persona="negotiator/sarah", model="gpt-realtime",
                            transcription_model="whisper-1", prices=DEFAULT_TABLE, metrics=metrics)
        said = items.message("item_1", "user", [items.input_text("hello")])
        await recorder.handle(ev.conversation_item_added(said, None))  # no such call: the write fails
        await recorder.handle(ev.conversation_item_done(said, None))
        await recorder.flush()
        assert metrics.value("parley_recorder_errors_total") == 2  # placed, then completed
        assert recorder.state.ids == ["item_1"]
    finally:
        await store.close()


async def test_a_missed_previous_item_is_on_record_so_a_successor_asks_for_it(tmp_path: Path) -> None:
    """An event names a previous item this recorder never saw: it asks the upstream, and puts the
    item on record as placed (just before the one naming it) so that a recorder taking the call over
    before the answer came asks again."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'missed.db'}")
    await store.start()
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    def recorder() -> Recorder:
        return Recorder(store, "call_m", persona="negotiator/sarah", model="gpt-realtime", transcription_model="whisper-1",
                        prices=DEFAULT_TABLE, metrics=Metrics(), send=send)

    try:
        await store.create_call(id="call_m", user_id="u", kind="server", persona="negotiator/sarah",
                                persona_name="Sarah", model="gpt-realtime")
        first = recorder()
        said = items.message("item_2", "user", [items.input_text("hello")])
        await first.handle(ev.conversation_item_added(said, "item_1"))  # item_1: never seen here
        await first.handle(ev.conversation_item_done(said, "item_1"))
        await first.flush()
        assert sent == [{"type": "conversation.item.retrieve", "item_id": "item_1"}]
        rows = await store.items("call_m", pending=True)
        assert [(r.item_id, r.status) for r in rows] == [("item_1", "pending"), ("item_2", "completed")]
        # the process dies before the answer: the next recorder asks again
        sent.clear()
        successor = recorder()
        successor.resume(rows)
        assert await successor.backfill() == 1 and sent == [{"type": "conversation.item.retrieve", "item_id": "item_1"}]
        # the answer: the item takes its place, with its words
        answer = items.message("item_1", "assistant", [{"type": "output_text", "text": "Hi, this is Sarah."}])
        await successor.handle(ev.conversation_item_retrieved(answer))
        await successor.flush()
        assert [(r.item_id, r.role, r.text) for r in await store.items("call_m")] == [
            ("item_1", "assistant", "Hi, this is Sarah."), ("item_2", "user", "hello")]
    finally:
        await store.close()


async def test_a_gap_of_several_items_is_walked_back_when_retrieved_items_name_their_previous(tmp_path: Path) -> None:
    """Parley's engine names a retrieved item's previous one (OpenAI's does not): a recorder that
    missed a user turn and its whole answer asks for each in turn, and stores both in order."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'walk.db'}")
    await store.start()
    sent: list[str] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event["item_id"])

    try:
        await store.create_call(id="call_w", user_id="u", kind="server", persona="negotiator/sarah",
                                persona_name="Sarah", model="gpt-realtime")
        r = Recorder(store, "call_w", persona="negotiator/sarah", model="gpt-realtime", transcription_model="whisper-1",
                     prices=DEFAULT_TABLE, metrics=Metrics(), send=send)
        first = items.message("item_1", "user", [items.input_text("my bill is too high")])
        await r.handle(ev.conversation_item_done(first, None))
        # a gap: item_2 (user) and item_3 (its answer) were said while nobody listened
        later = items.message("item_4", "user", [items.input_text("thanks")])
        await r.handle(ev.conversation_item_done(later, "item_3"))
        answer = items.message("item_3", "assistant", [{"type": "output_text", "text": "I can offer $80."}])
        await r.handle({**ev.conversation_item_retrieved(answer), "previous_item_id": "item_2"})
        asked = items.message("item_2", "user", [items.input_text("can you lower it")])
        await r.handle({**ev.conversation_item_retrieved(asked), "previous_item_id": "item_1"})
        await r.flush()
        assert sent == ["item_3", "item_2"]
        assert [(i.item_id, i.text) for i in await store.items("call_w")] == [
            ("item_1", "my bill is too high"), ("item_2", "can you lower it"), ("item_3", "I can offer $80."),
            ("item_4", "thanks")]
    finally:
        await store.close()
