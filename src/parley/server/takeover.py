"""Shared mode: the calls of a process that died or stopped go on, held by another.

Every process beats in Redis (`parley.server.shared.hub`); each call row names its `owner`. Every
`lease / 4` seconds a process looks for active calls whose owner no longer beats and claims each with
one conditional UPDATE of the row (`owner = me where owner = the dead one`): of processes racing,
exactly one wins. (Not a Redis lease per call: the row already names the owner, so there is one
truth about who holds a call, and a process renews one heartbeat, not one key per call.)

The winner re-attaches the call's sideband (`/v1/realtime?call_id=`), takes its call slot, reloads
its recorder from the stored items (placed ones included), backfills what the dead process missed
(`Recorder.backfill`, then each unknown previous item as events name it), and carries on recording,
capping (the deadline is the row's `created_at + max_call_seconds`, the cost the row's) and running
the persona's agent. A call the upstream no longer has is ended (`server_restart`); so is one the
server cannot hold again: a browser-direct call (its next report revives it elsewhere, see
`DirectCalls._revive`) and a phone call whose audio went through the dead process.

A process that stalled past its lease and comes back finds its calls claimed (`fence`, every
sweep): it lets go of them (sideband closed, nothing ended, the row left to its new owner), so no
call is recorded or answered by two processes.

A process stopping gracefully (SIGTERM: a rolling restart) hands its calls over rather than ending
them (`CallManager.hand_over`, `DirectCalls.shutdown`): it closes each sideband, clears the row's
owner and announces a sweep, so the others claim the calls at once instead of after a lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

from .db import Call, as_utc
from .personas import find_persona
from .upstream import CALL_GONE, UpstreamError

if TYPE_CHECKING:
    from .calls import CallManager

log = logging.getLogger(__name__)

# A server-held call's facts that are not in its row (its limit key), kept in Redis while it lasts.
CALL_KEY = "callinfo"


class Takeover:
    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.hub = calls.hub
        assert self.hub is not None and calls.owner is not None
        self.owner: str = calls.owner
        self.interval = max(0.25, self.hub.lease_seconds / 4)
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Sweep now (calls were handed over), not at the next interval."""
        self._woken.set()

    async def remember(self, call_id: str, limit_key: str) -> None:
        ttl = self.calls.settings.max_call_seconds + 3600
        await self.hub.put_json(self.hub.key(CALL_KEY, call_id), {"limit_key": limit_key}, ttl)

    async def forget(self, call_id: str) -> None:
        await self.hub.delete(self.hub.key(CALL_KEY, call_id))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="takeover")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._woken.wait(), self.interval)
            except TimeoutError:
                pass
            self._woken.clear()
            try:
                await self.fence()
                await self.sweep()
            except Exception:
                log.exception("the takeover sweep failed")

    async def fence(self) -> int:
        """Let go of the calls held here that another process has claimed: this process stalled
        (stopped, swapped out, cut off from Redis) long enough for its beat to lapse, and on coming
        back must not record, cap or answer them a second time. How many it let go."""
        lost = await self.calls.store.claimed_from(list(self.calls.live), self.owner)
        for call_id in lost:
            live = self.calls.live.get(call_id)
            if live is not None and not live.handover:
                live.lost = live.handover = True
                await self.calls._let_go(live)
        return len(lost)

    async def sweep(self) -> int:
        """Claim the active calls of processes that stopped beating; how many were claimed."""
        rows = await self.calls.store.active_calls_not_of(self.owner)
        if not rows:
            return 0
        alive = await self.hub.alive(sorted({r.owner for r in rows if r.owner is not None}))
        claimed = 0
        for row in rows:
            if row.owner in alive or not await self.calls.store.claim_call(row.id, row.owner, self.owner):
                continue
            claimed += 1
            try:
                await self._take(row)
            except Exception:
                log.exception("call %s: taking it over failed", row.id)
                self.calls.metrics.inc("parley_takeovers_total", outcome="error")
                await self.calls.store.set_owner(row.id, row.owner)  # for the next sweep, here or elsewhere
        return claimed

    async def _take(self, row: Call) -> None:
        calls = self.calls
        if row.kind == "direct" and calls.upstream.kind != "local":
            # The browser holds the call and reports it to any process: held here, its reports are
            # recorded (and its idle and duration caps run) as at the process that stopped.
            await calls.directs.adopt(row, row.user_id)
            calls.metrics.inc("parley_takeovers_total", outcome="taken")
            log.info("call %s: browser-direct, taken over from %s", row.id, row.owner)
            return
        holdable = row.kind == "server" and row.upstream_call_id and calls.upstream.kind != "local"
        if not holdable:
            # (With the in-process engine as upstream, the call died with its process's engine.)
            await self._end(row, "not_holdable")
            return
        assert row.upstream_call_id is not None
        try:
            conn = await calls.upstream.sideband(row.upstream_call_id, self_url=None)
        except UpstreamError as exc:
            if exc.code == CALL_GONE:
                await self._end(row, "gone")
                return
            raise
        info: dict[str, Any] = await self.hub.get_json(self.hub.key(CALL_KEY, row.id)) or {}
        live = await calls.adopt(row, conn, limit_key=str(info.get("limit_key") or row.user_id),
                                 persona=find_persona(row.personas[-1]["id"] if row.personas else row.persona),
                                 deadline=self.deadline(row), items=await calls.store.items(row.id, pending=True))
        calls.metrics.inc("parley_takeovers_total", outcome="taken")
        log.info("call %s: taken over from %s (%d items on record)", row.id, row.owner, len(live.recorder.pending))

    def deadline(self, row: Call) -> float:
        """The call's duration cap as a time.monotonic() instant, from the stored start."""
        created = as_utc(row.created_at) or dt.datetime.now(dt.UTC)
        ends = created.timestamp() + self.calls.settings.max_call_seconds
        return time.monotonic() + (ends - time.time())

    async def _end(self, row: Call, outcome: str) -> None:
        if await self.calls.store.end_call(row.id, reason="server_restart"):
            self.calls.metrics.inc("parley_calls_ended_total", reason="server_restart")
        self.calls.metrics.inc("parley_takeovers_total", outcome=outcome)
        await self.forget(row.id)

