"""Takeover time after SIGKILL: from the kill of a live call's owner to another process holding it.

    scripts/loopback-only .venv/bin/python benchmarks/takeover.py [--kills 10] [--lease 3]

A standalone `parley engine` (the shared upstream), `parley serve` processes in shared mode on a
fresh PostgreSQL database (the machine's unix socket) and a private redis-server, one call through
/api/calls with an aiortc peer typing turns. Each round: a turn, SIGKILL of the owner, the time
until the call row names a new owner (the claim; the sideband is re-attached right after), a new
process started so that two stay alive. Prints p50/p95 and the call's transcript check.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import asyncpg
import httpx

from machine import describe, percentile
from support.cluster import Cluster, EngineProcess
from support.rtc import RtcPeer, of_type
from support.server import conversation, say_text, wait_done
from support.services import postgres_database, redis_server


async def owner_of(database: str, call_id: str) -> str:
    conn = await asyncpg.connect(database)
    try:
        return str(await conn.fetchval("select owner from calls where id = $1", call_id))
    finally:
        await conn.close()


async def run(redis_url: str, kills: int, lease: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="parley-takeover-"))
    async with postgres_database() as database:
        engine = EngineProcess(tmp / "engine")
        await engine.wait_healthy()
        cluster = Cluster(tmp, database, redis_url, 2, PARLEY_UPSTREAM="url", PARLEY_UPSTREAM_URL=engine.url,
                          PARLEY_SLOT_LEASE_SECONDS=lease, PARLEY_MAX_CALL_SECONDS="3600")
        times: list[float] = []
        try:
            await cluster.wait_healthy()
            async with httpx.AsyncClient(timeout=60) as c:
                peer = RtcPeer()
                r = await c.post(f"{cluster.urls[0]}/api/calls",
                                 json={"sdp": await peer.offer(), "persona": "negotiator/sarah"})
                r.raise_for_status()
                call_id = r.json()["call_id"]
                await peer.answer(r.json()["sdp"])
                await peer.wait_for(of_type("session.created"))
                for i in range(kills):
                    await wait_done(peer, say_text(peer, f"Turn {i}: my bill is too high."), timeout=120)
                    owner = await owner_of(database, call_id)
                    proc = cluster.procs[cluster.by_pid(int(owner.split(":")[1]))]
                    proc.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    for _ in range(3000):  # polling the row: the claim is an UPDATE of it
                        if await owner_of(database, call_id) != owner:
                            break
                        await asyncio.sleep(0.02)
                    times.append(time.monotonic() - killed)
                    print(f"kill {i + 1}: taken over in {times[-1]:.2f} s", flush=True)
                    proc.wait(10)
                    cluster.spawn()
                    await cluster.wait_healthy()
                await wait_done(peer, say_text(peer, "Thanks, bye."), timeout=120)
                expected = conversation(peer.events)
                alive = next(u for u, p in zip(cluster.urls, cluster.procs, strict=True) if p.poll() is None)
                await asyncio.sleep(2)
                items = (await c.get(f"{alive}/api/calls/{call_id}")).json()["transcript"]
                same = [(i["item_id"], i["role"]) for i in items] == expected
                print(f"transcript: {len(items)} items stored, {len(expected)} seen by the peer, "
                      f"{'identical' if same else 'DIFFERENT'} order")
                await peer.close()
        finally:
            cluster.stop()
            engine.stop()
    print(describe())
    print(f"takeover after SIGKILL (lease {lease} s), {len(times)} kills: "
          f"p50 {percentile(times, 50):.2f} s, p95 {percentile(times, 95):.2f} s, max {max(times):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease", default="3", help="PARLEY_SLOT_LEASE_SECONDS")
    args = parser.parse_args()
    with redis_server() as redis_url:  # (started outside the event loop: it runs one of its own)
        asyncio.run(run(redis_url, args.kills, args.lease))


if __name__ == "__main__":
    main()
