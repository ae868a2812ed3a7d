"""Shared mode: a rolling restart of every `parley serve` process during live calls.

Real servers: a standalone `parley engine` (the calls' media and sessions live there), three
`parley serve` processes on a fresh PostgreSQL database and a private redis-server, five aiortc
peers typing turns over their data channels. Each original process is replaced in turn (a new one
started, then SIGTERM to the old one while every call has a turn under way): the stopping process
hands its calls over instead of ending them, another claims each at once, and in the end every call
is still active, held by a live process, with every item its peer saw stored once, in order.

And a browser-direct call (a key from /api/session, the peer's data channel reported to
/api/calls/{id}/events) through a restart of every process, its reports landing at the others
while each stops, then SIGKILL of the process holding it: recorded wherever they land, nothing
twice, the call not ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cluster import Cluster, EngineProcess
from support.rtc import RtcPeer, of_type
from support.server import conversation, eventually, say_text, start_call, wait_done
from support.takeover import kill_owner

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CALLS = 5



async def _rows(database: str, ids: list[str]) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("select id, owner, status, end_reason from calls where id = any($1)", ids)
        return {r["id"]: r for r in rows}
    finally:
        await conn.close()


async def _turns(peers: list[tuple[RtcPeer, str]], starts: list[int]) -> None:
    await asyncio.gather(*(wait_done(p, s, timeout=180) for (p, _), s in zip(peers, starts, strict=True)))


async def test_a_rolling_restart_loses_no_call_and_no_item(tmp_path: Path, database: str, redis_url: str,
                                                           engine_process: EngineProcess) -> None:
    cluster = Cluster(tmp_path, database, redis_url, 3, PARLEY_UPSTREAM="url", PARLEY_UPSTREAM_URL=engine_process.url,
                      PARLEY_SLOT_LEASE_SECONDS="3", PARLEY_MAX_CONCURRENT_CALLS="10", PARLEY_RATE_LIMIT_BURST="20")
    peers: list[tuple[RtcPeer, str]] = []
    handovers: list[float] = []
    try:
        await cluster.wait_healthy()
        async with httpx.AsyncClient(timeout=60) as c:
            for k in range(CALLS):
                peers.append(await start_call(c, cluster.urls[k % 3]))
            ids = [call_id for _, call_id in peers]
            await _turns(peers, [say_text(p, f"Hi, I am caller number {k}.") for k, (p, _) in enumerate(peers)])
            for old in range(3):
                new = cluster.spawn()  # the replacement first, then the old one goes
                await cluster.wait_healthy()
                gone = cluster.procs[old]
                starts = [say_text(p, "My bill went up again this month.") for p, _ in peers]
                gone.terminate()
                stopped = time.monotonic()
                await asyncio.to_thread(gone.wait, 60)
                # (uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is a clean stop)
                assert gone.returncode in (0, -15), (gone.returncode, cluster.tail(old))
                alive = {str(p.pid) for p in cluster.procs if p.poll() is None}

                async def held(alive: set[str] = alive) -> dict[str, Any] | None:
                    rows = await _rows(database, ids)
                    ok = all(r["owner"] is not None and r["owner"].split(":")[1] in alive for r in rows.values())
                    return rows if ok else None

                rows = await eventually(held, timeout=20, interval=0.05)
                handovers.append(time.monotonic() - stopped)
                assert all(r["status"] == "active" for r in rows.values()), dict(rows)
                await _turns(peers, starts)
                # and a turn wholly after the handover, at the new holders
                await _turns(peers, [say_text(p, f"Restart {old} is over, {new} is up.") for p, _ in peers])
            url = cluster.urls[-1]
            for peer, call_id in peers:
                expected = conversation(peer.events)

                async def stored(call_id: str = call_id, n: int = len(expected)) -> list[dict[str, Any]] | None:
                    r = await c.get(f"{url}/api/calls/{call_id}")
                    items: list[dict[str, Any]] = r.json()["transcript"]
                    return items if len(items) >= n else None

                try:
                    items = await eventually(stored, timeout=20)
                except TimeoutError:
                    items = (await c.get(f"{url}/api/calls/{call_id}")).json()["transcript"]
                assert [(i["item_id"], i["role"]) for i in items] == expected, (call_id, items)
                assert all(i["text"] for i in items), items
            rows = await _rows(database, ids)
            assert all(r["status"] == "active" for r in rows.values()), dict(rows)
            for _, call_id in peers:
                r = await c.post(f"{url}/api/calls/{call_id}/hangup")
                assert r.status_code == 200 and r.json()["end_reason"] == "hangup", r.text
        print("seconds from SIGTERM to every call held again:", [round(t, 2) for t in handovers])
    finally:
        for peer, _ in peers:
            await peer.close()
        cluster.stop()


class _Reporter:
    """The browser's side of a direct call: what its data channel delivered since the last report,
    posted to a process (again on 503 report_busy: another report is being recorded)."""

    def __init__(self, c: httpx.AsyncClient, peer: RtcPeer, key: dict[str, Any], upstream_call_id: str) -> None:
        self.c, self.peer, self.key, self.upstream_call_id = c, peer, key, upstream_call_id
        self.sent = 0
        self.accepted = 0

    async def report(self, url: str) -> dict[str, Any]:
        events, upto = self.peer.events[self.sent:], len(self.peer.events)
        while True:
            r = await self.c.post(f"{url}{self.key['events_url']}",
                                  json={"events": events, "upstream_call_id": self.upstream_call_id})
            if r.status_code != 503:
                break
            await asyncio.sleep(0.2)
        assert r.status_code == 200 and r.json()["status"] == "active", (url, r.text)
        self.sent = upto
        self.accepted += r.json()["accepted"]
        body: dict[str, Any] = r.json()
        return body


async def test_a_rolling_restart_hands_a_browser_direct_call_over(tmp_path: Path, database: str, redis_url: str,
                                                                  engine_process: EngineProcess) -> None:
    cluster = Cluster(tmp_path, database, redis_url, 3, PARLEY_UPSTREAM="url", PARLEY_UPSTREAM_URL=engine_process.url,
                      PARLEY_SLOT_LEASE_SECONDS="3")
    peer = RtcPeer()
    try:
        await cluster.wait_healthy()
        async with httpx.AsyncClient(timeout=60) as c:
            key = (await c.post(f"{cluster.urls[0]}/api/session", json={"persona": "negotiator/sarah"})).json()
            r = await c.post(key["calls_url"], content=await peer.offer(),
                             headers={"authorization": f"Bearer {key['value']}", "content-type": "application/sdp"})
            assert r.status_code == 201, r.text
            await peer.answer(r.text)
            await peer.wait_for(of_type("session.created"))
            browser = _Reporter(c, peer, key, r.headers["location"].rsplit("/", 1)[1])
            await wait_done(peer, say_text(peer, "Hi, my bill is too high."), timeout=90)
            await browser.report(cluster.urls[0])  # on record, held by the first process
            for old in range(3):
                cluster.spawn()
                await cluster.wait_healthy()
                gone = cluster.procs[old]
                others = [u for u, p in zip(cluster.urls, cluster.procs, strict=True) if p.poll() is None and p is not gone]
                start = say_text(peer, f"Restart {old}: my bill went up again this month.")
                gone.terminate()
                # the browser keeps reporting while the process stops, at the others
                while gone.poll() is None:
                    await browser.report(others[0])
                    await asyncio.sleep(0.1)
                assert gone.returncode in (0, -15), (gone.returncode, cluster.tail(old))
                await wait_done(peer, start, timeout=90)
                await browser.report(others[1])
                await wait_done(peer, say_text(peer, f"Restart {old} is over."), timeout=90)
                await browser.report(others[-1])
            # and SIGKILL of the process holding it: another claims it and holds it on (its caps run there)
            assert await kill_owner(cluster, database, key["call_id"]) < 5
            row = (await _rows(database, [key["call_id"]]))[key["call_id"]]
            assert row["status"] == "active", dict(row)
            await cluster.wait_healthy()
            await wait_done(peer, say_text(peer, "Are you still there?"), timeout=90)
            url = cluster.urls[-1]
            await browser.report(url)
            call = (await c.get(f"{url}/api/calls/{key['call_id']}")).json()
            assert call["kind"] == "direct" and call["status"] == "active", call
            items = call["transcript"]
            assert [(i["item_id"], i["role"]) for i in items] == conversation(peer.events), items
            assert all(i["text"] for i in items), items
            alive = {str(p.pid) for p in cluster.procs if p.poll() is None}
            rows = await _rows(database, [key["call_id"]])
            assert rows[key["call_id"]]["owner"].split(":")[1] in alive, dict(rows[key["call_id"]])
            r = await c.post(f"{url}/api/calls/{key['call_id']}/hangup")
            assert r.status_code == 200 and r.json()["end_reason"] == "hangup", r.text
    finally:
        await peer.close()
        cluster.stop()
