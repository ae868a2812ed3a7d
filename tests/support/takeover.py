"""SIGKILL of a live call's owner, again and again: the loop the takeover test and benchmark share.

Each round is one turn of the call with the owner killed at one point of it, cycling over
`POINTS`: 0 ms after the peer sees the user's `conversation.item.done` (a spoken turn: the row is
written a few ms after the peer sees it), after `response.done` (a typed turn) and while the
answer's audio plays (spoken). A replacement process is started at once after each kill, and is up
before the next one, so there are always spare processes to take the call.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

from support.cluster import Cluster
from support.rtc import RtcPeer, of_type
from support.server import eventually, say_text, wait_done
from support.speech import speech_pcm24k

POINTS = ("item_done", "response_done", "mid_audio")

TURNS = [
    "Hi, my bill is too high.",
    "I have been a customer for six years.",
    "Another company offered me fifty dollars a month.",
    "What does that include?",
    "My internet keeps dropping in the evening.",
    "I would like a better price, please.",
    "Can you waive the late fee?",
    "That sounds better than before.",
    "What happens after twelve months?",
    "Is there a contract?",
]


@dataclass
class Kill:
    point: str
    seconds: float  # from the SIGKILL to another process holding the call (its row names it)


async def call_row(database: str, call_id: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        return await conn.fetchrow("select * from calls where id = $1", call_id)
    finally:
        await conn.close()


async def owner_of(database: str, call_id: str) -> str:
    return str((await call_row(database, call_id))["owner"])


async def kill_owner(cluster: Cluster, database: str, call_id: str) -> float:
    """SIGKILL the call's owner now and start a replacement; seconds until another process holds it."""
    owner = await owner_of(database, call_id)
    proc = cluster.procs[cluster.by_pid(int(owner.split(":")[1]))]
    proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.to_thread(proc.wait, 10)
    cluster.spawn()  # (healthy by the next kill: `kill_rounds` waits for it)

    async def moved() -> bool:  # the claim is one UPDATE of the row
        return await owner_of(database, call_id) != owner

    await eventually(moved, timeout=15, interval=0.02)
    return time.monotonic() - killed


def speak(peer: RtcPeer, text: str) -> int:
    """Say a turn into the microphone; the index to wait from."""
    start = len(peer.events)
    peer.mic.say(speech_pcm24k(text))
    return start


def _user_done(e: dict[str, Any]) -> bool:
    return e["type"] == "conversation.item.done" and e["item"].get("role") == "user"


async def kill_rounds(cluster: Cluster, database: str, peer: RtcPeer, call_id: str, kills: int, *,
                      timeout: float = 90, report: Any = None) -> list[Kill]:
    """`kills` turns, the owner SIGKILLed once in each at the next of `POINTS`; each turn is done
    (its audio played) when this returns. `report(i, kill)` is called after each kill."""
    done: list[Kill] = []
    for i in range(kills):
        point, text = POINTS[i % len(POINTS)], TURNS[i % len(TURNS)]
        await cluster.wait_healthy()  # the last kill's replacement: a spare process
        if point == "response_done":
            await wait_done(peer, say_text(peer, text), timeout=timeout)
            seconds = await kill_owner(cluster, database, call_id)
        else:
            start = speak(peer, text)
            await peer.wait_for(_user_done if point == "item_done" else of_type("output_audio_buffer.started"),
                                start=start, timeout=timeout)
            seconds = await kill_owner(cluster, database, call_id)
            await wait_done(peer, start, timeout=timeout)
        done.append(Kill(point, seconds))
        if report is not None:
            report(i, done[-1])
    return done
