"""Takeover time after SIGKILL: from the kill of a live call's owner to another process holding it.

    scripts/loopback-only .venv/bin/python benchmarks/takeover.py [--kills 10] [--lease 3]

A standalone `parley engine` (the shared upstream), `parley serve` processes in shared mode on a
fresh PostgreSQL database (the machine's unix socket) and a private redis-server, one call through
/api/calls with an aiortc peer. Each round (`tests/support/takeover.kill_rounds`, the loop the CI
test runs): a turn with SIGKILL of the owner at the next point of the turn (the user's item done,
the response done, mid-audio), the time until the call row names a new owner (the claim; the
sideband is re-attached right after), a new process started so that two stay alive. Prints p50/p95
per point and overall, and the call's transcript check.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import httpx

from machine import describe, percentile
from support.cluster import Cluster, EngineProcess
from support.server import conversation, say_text, start_call, wait_done
from support.services import postgres_database, redis_server
from support.takeover import POINTS, Kill, kill_rounds


async def run(redis_url: str, n_kills: int, lease: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="parley-takeover-"))
    async with postgres_database() as database:
        engine = EngineProcess(tmp / "engine")
        await engine.wait_healthy()
        cluster = Cluster(tmp, database, redis_url, 2, PARLEY_UPSTREAM="url", PARLEY_UPSTREAM_URL=engine.url,
                          PARLEY_SLOT_LEASE_SECONDS=lease, PARLEY_MAX_CALL_SECONDS="3600")
        kills: list[Kill] = []
        try:
            await cluster.wait_healthy()
            async with httpx.AsyncClient(timeout=60) as c:
                peer, call_id = await start_call(c, cluster.urls[0])
                kills = await kill_rounds(cluster, database, peer, call_id, n_kills, timeout=120, report=lambda i, k: print(
                    f"kill {i + 1} ({k.point}): taken over in {k.seconds:.2f} s", flush=True))
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
    for point in (*POINTS, None):
        times = [k.seconds for k in kills if point in (None, k.point)]
        if times:
            print(f"takeover after SIGKILL (lease {lease} s), {point or 'all'}, {len(times)} kills: "
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
