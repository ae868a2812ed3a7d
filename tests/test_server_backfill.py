"""A sideband that drops loses no item: the recorder stores each item's place as the conversation
places it, and after reconnecting asks the upstream (`conversation.item.retrieve`) for the items it
placed but never saw complete and for each previous item a later event names that it never saw.

The upstream (the real local engine, in process) closes the call's sideband on purpose and refuses
it for a while; turns go on meanwhile; the stored transcript has every item, in order, once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from support.rtc import of_type
from support.server import (
    call_json,
    conversation,
    eventually,
    http,
    make_engine,
    make_settings,
    running_app,
    say_text,
    server_call,
)


def _pending(db: Path, call_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("select item_id, role from transcript_items where call_id = ? and status = 'pending'",
                                 (call_id,)))


async def test_a_sideband_the_upstream_drops_loses_no_item(tmp_path: Path) -> None:
    engine = make_engine()
    with running_app(make_settings(tmp_path), engine=engine) as (url, app):
        async with http(url) as c, server_call(c) as (peer, call_id):
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hi, my bill is too high."))
            live = app.state.server.calls.live[call_id]
            loop, upstream_id, first = live.task.get_loop(), live.upstream_call_id, live.conn

            async def on_server(coro: Any) -> Any:
                return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

            # the upstream drops the sideband (and refuses it for now) right after placing the second
            # answer: the server has its place, none of its words
            placed: asyncio.Future[str] = loop.create_future()

            def drop(event: dict[str, Any]) -> None:
                if event["type"] == "conversation.item.added" and event["item"].get("role") == "assistant" \
                        and not placed.done():
                    assert engine.drop_sidebands(upstream_id, hold=True) == 1
                    placed.set_result(event["item"]["id"])

            stop = engine.calls[upstream_id].runner.listen(drop)  # (called on the server's loop)
            start = say_text(peer, "I have been a customer for six years.")
            answer = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_wait(placed), loop))
            loop.call_soon_threadsafe(stop)
            # meanwhile: the answer ends, and the caller types a whole turn, unseen by the server
            await peer.wait_for(of_type("response.done"), start=start, timeout=60)
            mark = len(peer.events)
            peer.send({"type": "conversation.item.create",
                       "item": {"type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": "Another company offered me fifty."}]}})
            await peer.wait_for(of_type("conversation.item.done"), start=mark)
            await on_server(_release(engine, upstream_id))
            await eventually(lambda: _async(lambda: app.state.server.calls.live[call_id].conn is not first), timeout=20)
            # the next answer names the unseen turn as its previous item: it is retrieved and placed
            mark = len(peer.events)
            peer.send({"type": "response.create"})
            await peer.wait_for(of_type("response.done"), start=mark, timeout=60)
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "What does that include?"), timeout=60)

            expected = conversation(peer.events)
            assert len(expected) == 8

            async def stored() -> list[dict[str, Any]] | None:
                items: list[dict[str, Any]] = (await call_json(c, call_id))["transcript"]
                return items if len(items) >= len(expected) else None

            items = await eventually(stored, timeout=20)
            assert [(i["item_id"], i["role"]) for i in items] == expected
            assert all(i["text"] for i in items), items
            assert not _pending(tmp_path / "parley.db", call_id)
            assert (await call_json(c, call_id))["status"] == "active"
            metrics = app.state.server.metrics
            assert answer == expected[3][0]
            assert metrics.value("parley_backfill_requests_total", reason="pending") == 1  # the answer
            assert metrics.value("parley_backfill_requests_total", reason="previous") == 1  # the typed turn


async def _wait(future: asyncio.Future[str]) -> str:
    return await asyncio.wait_for(future, 60)


async def _release(engine: Any, call_id: str) -> None:
    engine.release_sidebands(call_id)


async def _async(check: Any) -> Any:
    return check()
