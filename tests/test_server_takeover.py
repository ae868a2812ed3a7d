"""Shared mode: SIGKILL of the process that owns a live call, and another takes the call over.

Real servers: a standalone `parley engine` (the upstream every server process shares: the call's
media and session live there, not in the process that dies), `parley serve` processes on a fresh
PostgreSQL database and a private redis-server, an aiortc peer speaking turns through /api/calls.
The owner is killed 10 times, at points spread over a turn (0 ms after the peer sees its item done,
after the response is done, while the answer's audio plays; a replacement process started after
each kill); each time another process claims the call within 5 s, and in the end the stored
transcript has every item the peer saw, in order, once, with words.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cluster import Cluster, EngineProcess
from support.server import conversation, eventually, say_text, start_call, wait_done
from support.takeover import POINTS, call_row, kill_owner, kill_rounds, owner_of

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = "3"  # seconds: a dead process's heartbeat lapses within this
KILLS = 10  # the figure: at least 10, spread over a turn (`support.takeover.POINTS`)



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


async def test_sigkill_of_the_owner_mid_call_loses_no_turn(tmp_path: Path, database: str, redis_url: str,
                                                           engine_process: EngineProcess) -> None:
    cluster = await _cluster(tmp_path, database, redis_url, engine_process, 3)
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            peer, call_id = await start_call(c, cluster.urls[0])
            try:
                kills = await kill_rounds(cluster, database, peer, call_id, KILLS,
                                          report=lambda i, k: print(f"kill {i + 1} ({k.point}): {k.seconds:.2f} s"))
                # escalated at a process that does not hold the call: the command reaches its owner
                await cluster.wait_healthy()
                owner = await owner_of(database, call_id)
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

                try:  # (each item is written within ms of its event: this waits for the last answer's)
                    items = await eventually(stored, timeout=10)
                except TimeoutError:
                    items = (await c.get(f"{alive}/api/calls/{call_id}")).json()["transcript"]
                got = [(i["item_id"], i["role"]) for i in items]
                assert len(set(got)) == len(got) and all(i["text"] for i in items), items  # once each, with words
                assert [e for e in expected if e in got] == got, (kills, items)  # in order, none the peer did not see
                # hung up at any process: the call ends, on record as a hangup
                r = await c.post(f"{alive}/api/calls/{call_id}/hangup")
                assert r.status_code == 200 and r.json()["end_reason"] == "hangup", r.text
            finally:
                await peer.close()
        assert [k.point for k in kills] == [POINTS[i % 3] for i in range(KILLS)]
        assert all(k.seconds < 5 for k in kills), kills
        missing = [e for e in expected if e not in got]
        assert not missing, f"lost across the kills: {missing} of {len(expected)} ({kills})"
    finally:
        cluster.stop()


async def test_the_duration_cap_holds_after_a_takeover(tmp_path: Path, database: str, redis_url: str,
                                                       engine_process: EngineProcess) -> None:
    cluster = await _cluster(tmp_path, database, redis_url, engine_process, 2, PARLEY_MAX_CALL_SECONDS="20")
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            peer, call_id = await start_call(c, cluster.urls[0])
            try:
                await wait_done(peer, say_text(peer, "Hi, my bill is too high."), timeout=60)
                assert await kill_owner(cluster, database, call_id) < 5

                async def ended() -> Any:
                    row = await call_row(database, call_id)
                    return row if row["status"] != "active" else None

                row = await eventually(ended, timeout=40, interval=0.1)
                assert row["end_reason"] == "max_duration"
                late = (row["ended_at"] - row["created_at"]).total_seconds() - 20
                assert -0.5 < late < 2, late
            finally:
                await peer.close()
    finally:
        cluster.stop()


def _series(metrics_text: str, name: str, process: str) -> float:
    """One process's value of a counter or gauge in /metrics (shared mode: every process's series)."""
    label = f'process="{process}"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith(name) and label in line)


async def test_a_process_that_stalled_past_its_lease_lets_go_of_its_calls(tmp_path: Path, database: str,
                                                                          redis_url: str, engine_process: EngineProcess) -> None:
    """Split brain: the owner stops (SIGSTOP) until another process claims its call, then goes on.
    It must let go (not record, cap or answer the call a second time), and the call goes on, stored
    once."""
    cluster = await _cluster(tmp_path, database, redis_url, engine_process, 2)
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            peer, call_id = await start_call(c, cluster.urls[0])
            try:
                await wait_done(peer, say_text(peer, "Hi, my bill is too high."), timeout=90)
                owner = await owner_of(database, call_id)
                stalled = cluster.by_pid(int(owner.split(":")[1]))
                cluster.procs[stalled].send_signal(signal.SIGSTOP)
                try:
                    async def claimed() -> bool:
                        return await owner_of(database, call_id) != owner

                    await eventually(claimed, timeout=20, interval=0.05)
                finally:
                    cluster.procs[stalled].send_signal(signal.SIGCONT)

                async def let_go() -> bool:  # as the stalled process itself reports it
                    text = (await c.get(f"{cluster.urls[stalled]}/metrics")).text
                    return (_series(text, "parley_calls_lost_total", owner) == 1
                            and _series(text, "parley_calls_active", owner) == 0)

                await eventually(let_go, timeout=20, interval=0.2)
                await wait_done(peer, say_text(peer, "Another company offered me fifty dollars a month."), timeout=90)
                expected = conversation(peer.events)

                async def stored() -> list[Any] | None:
                    items = (await c.get(f"{cluster.urls[stalled]}/api/calls/{call_id}")).json()["transcript"]
                    return items if len(items) >= len(expected) else None

                items = await eventually(stored, timeout=20)
                assert [(i["item_id"], i["role"]) for i in items] == expected
                assert (await call_row(database, call_id))["owner"] != owner
            finally:
                await peer.close()
    finally:
        cluster.stop()
