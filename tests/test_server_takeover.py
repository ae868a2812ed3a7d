"""Shared mode: SIGKILL of the process that owns a live call, and another takes the call over.

Real servers: a standalone `parley engine` (the upstream every server process shares: the call's
media and session live there, not in the process that dies), `parley serve` processes on a fresh
PostgreSQL database and a private redis-server, an aiortc peer speaking turns through /api/calls.
The owner is killed at points spread over a turn (0 ms after the peer sees its item done, after the
response is done, while the answer's audio plays); each time another process claims the call within
5 s, and in the end the stored transcript has every item the peer saw, in order, once, with words.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cluster import Cluster, EngineProcess
from support.rtc import RtcPeer, of_type
from support.server import conversation, eventually, say_text, wait_done
from support.speech import speech_pcm24k

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = "3"  # seconds: a dead process's heartbeat lapses within this


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[EngineProcess]:
    proc = EngineProcess(tmp_path / "engine")
    try:
        await proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


async def _cluster(tmp_path: Path, database: str, redis_url: str, engine: EngineProcess, n: int,
                   **extra: str) -> Cluster:
    c = Cluster(tmp_path, database, redis_url, n, PARLEY_UPSTREAM="url", PARLEY_UPSTREAM_URL=engine.url,
                PARLEY_SLOT_LEASE_SECONDS=LEASE, **extra)
    try:
        await c.wait_healthy()
    except BaseException:
        c.stop()
        raise
    return c


async def _owner(database: str, call_id: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        return str(await conn.fetchval("select owner from calls where id = $1", call_id))
    finally:
        await conn.close()


async def _row(database: str, call_id: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        return await conn.fetchrow("select * from calls where id = $1", call_id)
    finally:
        await conn.close()


async def _kill_owner(cluster: Cluster, database: str, call_id: str) -> float:
    """SIGKILL the call's owner now; seconds until another process holds the call."""
    owner = await _owner(database, call_id)
    proc = cluster.procs[cluster.by_pid(int(owner.split(":")[1]))]
    proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    proc.wait(10)

    async def moved() -> bool:
        return await _owner(database, call_id) != owner

    await eventually(moved, timeout=15, interval=0.05)
    return time.monotonic() - killed


async def _start_call(c: httpx.AsyncClient, url: str) -> tuple[RtcPeer, str]:
    peer = RtcPeer()
    r = await c.post(f"{url}/api/calls", json={"sdp": await peer.offer(), "persona": "negotiator/sarah"})
    assert r.status_code == 201, r.text
    await peer.answer(r.json()["sdp"])
    await peer.wait_for(of_type("session.created"))
    return peer, r.json()["call_id"]


def _say(peer: RtcPeer, text: str) -> int:
    start = len(peer.events)
    peer.mic.say(speech_pcm24k(text))
    return start


def _user_done() -> Any:
    return lambda e: e["type"] == "conversation.item.done" and e["item"].get("role") == "user"


async def test_sigkill_of_the_owner_mid_call_loses_no_turn(tmp_path: Path, database: str, redis_url: str,
                                                           engine: EngineProcess) -> None:
    cluster = await _cluster(tmp_path, database, redis_url, engine, 3)
    takeovers: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            peer, call_id = await _start_call(c, cluster.urls[0])
            try:
                await wait_done(peer, _say(peer, "Hi, my bill is too high."), timeout=90)
                # 1: 0 ms after the peer sees the user's item done
                start = _say(peer, "I have been a customer for six years.")
                await peer.wait_for(_user_done(), start=start, timeout=90)
                takeovers.append(await _kill_owner(cluster, database, call_id))
                await wait_done(peer, start, timeout=90)
                # 2: after the response is done
                start = say_text(peer, "Another company offered me fifty dollars a month.")
                await wait_done(peer, start, timeout=90)
                takeovers.append(await _kill_owner(cluster, database, call_id))
                cluster.spawn()  # a third process for the last kill
                await cluster.wait_healthy()
                # 3: while the answer's audio plays
                start = _say(peer, "What does that include?")
                await peer.wait_for(of_type("output_audio_buffer.started"), start=start, timeout=90)
                takeovers.append(await _kill_owner(cluster, database, call_id))
                await wait_done(peer, start, timeout=90)
                await wait_done(peer, say_text(peer, "Alright, thank you."), timeout=90)
                # escalated at a process that does not hold the call: the command reaches its owner
                cluster.spawn()
                await cluster.wait_healthy()
                owner = await _owner(database, call_id)
                others = [u for u, p in zip(cluster.urls, cluster.procs, strict=True)
                          if p.poll() is None and p.pid != int(owner.split(":")[1])]
                start = len(peer.events)
                r = await c.post(f"{others[0]}/api/calls/{call_id}/escalate")
                assert r.status_code == 200 and r.json()["persona"]["id"] != "negotiator/sarah", r.text
                await wait_done(peer, start, timeout=90)
                expected = conversation(peer.events)
                alive = others[0]

                async def stored() -> list[dict[str, Any]] | None:
                    r = await c.get(f"{alive}/api/calls/{call_id}")
                    items: list[dict[str, Any]] = r.json()["transcript"]
                    return items if len(items) >= len(expected) else None

                try:
                    items = await eventually(stored, timeout=20)
                except TimeoutError:
                    items = (await c.get(f"{alive}/api/calls/{call_id}")).json()["transcript"]
                assert [(i["item_id"], i["role"]) for i in items] == expected, (takeovers, items)
                assert all(i["text"] for i in items), items
                # hung up at any process: the call ends, on record as a hangup
                r = await c.post(f"{alive}/api/calls/{call_id}/hangup")
                assert r.status_code == 200 and r.json()["end_reason"] == "hangup", r.text
            finally:
                await peer.close()
        print("takeover seconds:", [round(t, 2) for t in takeovers])
        assert len(takeovers) == 3 and all(t < 5 for t in takeovers), takeovers
    finally:
        cluster.stop()


async def test_the_duration_cap_holds_after_a_takeover(tmp_path: Path, database: str, redis_url: str,
                                                       engine: EngineProcess) -> None:
    cluster = await _cluster(tmp_path, database, redis_url, engine, 2, PARLEY_MAX_CALL_SECONDS="20")
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            peer, call_id = await _start_call(c, cluster.urls[0])
            try:
                await wait_done(peer, say_text(peer, "Hi, my bill is too high."), timeout=60)
                assert await _kill_owner(cluster, database, call_id) < 5

                async def ended() -> Any:
                    row = await _row(database, call_id)
                    return row if row["status"] != "active" else None

                row = await eventually(ended, timeout=40, interval=0.1)
                assert row["end_reason"] == "max_duration"
                late = (row["ended_at"] - row["created_at"]).total_seconds() - 20
                assert -0.5 < late < 2, late
            finally:
                await peer.close()
    finally:
        cluster.stop()
