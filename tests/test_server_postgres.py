"""The recording test against a real PostgreSQL server (127.0.0.1:5432, trust auth, database `test`):
a call through /api/calls with an aiortc peer, the transfer and outcome tools, and the rows it leaves.
Each run works in a database of its own, created and dropped here. Skips when no server answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.server.db import schema_head
from support.rtc import of_type
from support.server import call_json, eventually, http, make_settings, running_server, say_text, server_call

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

async def test_call_recorded_in_postgresql(tmp_path: Path, database: str) -> None:
    import asyncpg

    settings = make_settings(tmp_path, database_url=database)
    assert settings.database.startswith("postgresql+asyncpg://")
    with running_server(settings) as url:
        async with http(url) as c:
            async with server_call(c) as (peer, call_id):
                await peer.wait_for(of_type("response.done"), start=say_text(peer, "Can I speak to your supervisor?"))
                updated = await peer.wait_for(lambda e: e["type"] == "session.updated" and "Marco" in str(e))
                marco = await peer.wait_for(of_type("response.done"), start=peer.events.index(updated))
                assert "Marco" in str(marco["response"]["output"])
                start = say_text(peer, "Okay, I will take that offer.")
                answered = await peer.wait_for(lambda e: e["type"] == "conversation.item.added"
                                               and e["item"]["type"] == "function_call_output", start=start)
                await peer.wait_for(of_type("response.done"), start=peer.events.index(answered))
                await eventually(lambda: _has_outcome(c, call_id, messages=6))
                assert (await c.post(f"/api/calls/{call_id}/hangup")).status_code == 200
            call = await call_json(c, call_id)
    assert call["status"] == "ended" and call["outcome"]["accepted_by"] == "Marco"
    assert [i["speaker"] for i in call["transcript"] if i["kind"] == "message"] == \
        ["You", "Sarah", "Marco", "You", "Marco", "Marco"]

    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("select version_num from alembic_version") == schema_head()
        row = await conn.fetchrow("select status, end_reason, cost_usd, outcome from calls where id = $1", call_id)
        assert (row["status"], row["end_reason"]) == ("ended", "hangup") and row["cost_usd"] > 0
        items = await conn.fetch("select role, kind, persona from transcript_items where call_id = $1 order by seq",
                                 call_id)
        assert [(r["role"], r["kind"]) for r in items][:3] == [("user", "message"), ("assistant", "message"),
                                                               ("assistant", "function_call")]
        usage = await conn.fetch("select persona, cost_usd from usage_records where call_id = $1 and kind = 'response'",
                                 call_id)
        assert {u["persona"] for u in usage} == {"negotiator/sarah", "negotiator/marco"}
        assert sum(u["cost_usd"] for u in usage) == pytest.approx(row["cost_usd"])
    finally:
        await conn.close()

    # a second start migrates nothing and keeps the data
    with running_server(settings) as url:
        async with http(url, cookies=c.cookies) as again:
            assert (await call_json(again, call_id))["outcome"] == call["outcome"]


async def _has_outcome(c: object, call_id: str, messages: int) -> bool:
    """The outcome is stored and so is the closing line (the record may trail the data channel)."""
    import httpx

    assert isinstance(c, httpx.AsyncClient)
    call = await call_json(c, call_id)
    return bool(call["outcome"]) and sum(1 for i in call["transcript"] if i["kind"] == "message") >= messages
