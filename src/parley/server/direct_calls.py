"""Browser-direct calls (`POST /api/session`): the browser holds the call, the server records it.

The call id comes with the ephemeral key; the browser reports its data-channel events to
`/api/calls/{id}/events`, and the first report puts the call on record. The server cannot hang such
a call up unless the browser told it the upstream call id, so caps end the record and tell the
browser. In shared mode a call's reports may land on any process: a key awaiting its first report is
in Redis, later reports revive the call from the database at whichever process they reach.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parley.apps.negotiator.agent import NegotiatorAgent
from parley.protocol import changes as ch
from parley.protocol import ids

from .auth import Principal
from .errors import ApiError
from .personas import CallPersona, find_persona
from .recorder import Recorder

if TYPE_CHECKING:
    from .calls import CallManager

log = logging.getLogger(__name__)

@dataclass
class DirectCall:
    id: str
    user_id: str
    limit_key: str
    persona: CallPersona
    model: str
    created: float = field(default_factory=time.time)
    recorder: Recorder | None = None
    agent: NegotiatorAgent | None = None
    upstream_call_id: str | None = None
    events: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# Event types a browser may report; the rest (audio, deltas) are dropped without being stored.
REPORTABLE = frozenset({
    "session.created", "session.updated", "conversation.item.added", "conversation.item.created",
    "conversation.item.done", "response.output_item.done", "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed", "conversation.item.truncated",
    "conversation.item.deleted", "response.created", "response.done", "error",
})


class DirectCalls:
    """The browser-direct calls this process holds (`calls`), for the `CallManager` that owns the
    shared parts (slots, the store, Redis, recorders and agents)."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        self.calls: dict[str, DirectCall] = {}

    def reported(self) -> int:
        """Calls that have reported (a minted key alone is not a call yet)."""
        return sum(1 for d in self.calls.values() if d.recorder is not None)

    async def register_direct(self, principal: Principal, persona: CallPersona, model: str, ttl: int) -> str:
        call_id = ids.call_id()
        await self.manager.take_slot(principal, call_id, ttl=ttl + 30)
        call = DirectCall(call_id, principal.user_id, principal.limit_key, persona, model)
        self.calls[call_id] = call
        if self.manager.hub is not None:  # its first report may reach another process
            try:
                await self.manager.hub.put_json(self.manager.hub.key("direct", call_id), {
                    "user_id": call.user_id, "limit_key": call.limit_key, "persona": persona.id, "model": model,
                    "created": call.created}, ttl + 60)
            except BaseException:
                await self.unregister_direct(call_id)
                raise
        self.manager.metrics.inc("parley_calls_total", kind="direct")
        return call_id

    async def unregister_direct(self, call_id: str) -> None:
        """A key that was not handed out after all (minting it failed)."""
        self.calls.pop(call_id, None)
        await self.manager.slots.release(call_id)
        if self.manager.hub is not None:
            await self.manager.hub.delete(self.manager.hub.key("direct", call_id))

    async def report(self, principal: Principal, call_id: str, events: list[Any],
                     upstream_call_id: str | None) -> dict[str, Any]:
        if self.manager.hub is None:
            return await self._report(principal, call_id, events, upstream_call_id)
        # Shared mode: a call's reports may land on any process; one at a time, each on the record as
        # the previous one (at whichever process) left it.
        from redis.exceptions import LockError

        try:
            async with self.manager.hub.redis.lock(self.manager.hub.key("report", call_id), timeout=30, blocking_timeout=15):
                return await self._report(principal, call_id, events, upstream_call_id)
        except LockError:
            self.manager.metrics.inc("parley_rate_limited_total", reason="report_busy")
            raise ApiError(503, "Another report of this call is still being recorded; send it again.",
                           "report_busy", headers={"Retry-After": "1"}) from None

    async def _current(self, call_id: str) -> DirectCall | None:
        """The call as this process holds it, unless another process recorded events since."""
        call = self.calls.get(call_id)
        if call is None or self.manager.hub is None:
            return call
        row = await self.manager.store.get_call(call_id)
        if call.recorder is None and row is None:
            return call  # minted here, no report yet anywhere
        if (call.recorder is not None and row is not None and row.status == "active"
                and row.events_received == call.events):
            return call
        self.calls.pop(call_id, None)
        return None

    async def _report(self, principal: Principal, call_id: str, events: list[Any],
                      upstream_call_id: str | None) -> dict[str, Any]:
        call = await self._current(call_id)
        if call is None:
            call = await self._revive(call_id, principal)
        if call.user_id != principal.user_id:
            raise ApiError(404, "No such call.", "call_not_found")
        async with call.lock:
            if call.recorder is None:  # the first report: from now on the call is on record
                await self.manager.store.create_call(id=call.id, user_id=call.user_id, kind="direct", persona=call.persona.id,
                                             persona_name=call.persona.name, model=call.model, owner=self.manager.owner)
                if self.manager.hub is not None:
                    await self.manager.hub.delete(self.manager.hub.key("direct", call.id))
                call.recorder = self.manager._recorder(call.id, call.user_id, call.persona, call.model)
                call.agent = self.manager._agent(call.id, call.persona, call.recorder)
            if upstream_call_id and upstream_call_id != call.upstream_call_id:
                call.upstream_call_id = upstream_call_id
                await self.manager.store.set_upstream_call_id(call.id, upstream_call_id)
            if call.events + len(events) > self.manager.settings.max_events_per_call:
                raise ApiError(413, f"A call may report at most {self.manager.settings.max_events_per_call} events.",
                               "too_many_events")
            accepted = ignored = 0
            for event in events:
                if not isinstance(event, dict) or event.get("type") not in REPORTABLE:
                    ignored += 1
                    continue
                changes = await self.manager._apply(call.recorder, call.agent, event)
                if any(isinstance(c, ch.InvalidEvent) for c in changes):
                    ignored += 1
                else:
                    accepted += 1
            call.events += accepted
            if accepted:
                await self.manager.store.count_events(call.id, accepted)
            await call.recorder.flush()  # what was reported is stored when the report is answered
            await self.manager.slots.refresh(call.id, self.manager.settings.direct_idle_seconds)
            reason = await self._direct_cap(call)
            if reason is not None:
                await self.end(call, reason, cap=True)
            return {"call_id": call.id, "accepted": accepted, "ignored": ignored,
                    "status": "ended" if reason else "active", "end_reason": reason,
                    "cost_usd": round(call.recorder.cost, 6)}

    async def _revive(self, call_id: str, principal: Principal) -> DirectCall:
        """A direct call this process does not hold (the server restarted, or in shared mode another
        process has it): from the database, or (no report yet) from the keys awaiting one in Redis."""
        row = await self.manager.store.get_call(call_id)
        if row is None and self.manager.hub is not None:
            pending = await self.manager.hub.get_json(self.manager.hub.key("direct", call_id))
            if pending is not None and pending["user_id"] == principal.user_id:
                waiting = DirectCall(call_id, pending["user_id"], pending["limit_key"], find_persona(pending["persona"]),
                                     pending["model"], created=float(pending["created"]))
                self.calls[call_id] = waiting
                return waiting
        if row is None or row.user_id != principal.user_id:
            raise ApiError(404, "No such call.", "call_not_found")
        if row.kind != "direct":
            raise ApiError(409, "The server records this call itself over its sideband; it takes no reports.",
                           "not_direct_call")
        if row.status != "active":
            raise ApiError(409, f"The call is over ({row.end_reason or row.status}).", "call_not_active")
        call = await self.adopt(row, principal.limit_key)
        await self.manager.slots.try_take(principal.limit_key, call_id, 10**6, ttl=self.manager.settings.direct_idle_seconds)
        if self.manager.owner is not None and row.owner != self.manager.owner:
            await self.manager.store.set_owner(call_id, self.manager.owner)  # its reports come here now
        return call

    async def adopt(self, row: Any, limit_key: str) -> DirectCall:
        """Hold a reported call from its row and stored items: revived for a report, or claimed from a
        process that stopped (`parley.server.takeover`), so that its idle and duration caps still run."""
        persona = find_persona(row.personas[-1]["id"] if row.personas else row.persona)
        items = await self.manager.store.items(row.id, pending=True)
        call = DirectCall(row.id, row.user_id, limit_key, persona, row.model,
                          created=row.created_at.timestamp(), upstream_call_id=row.upstream_call_id,
                          events=row.events_received)
        call.recorder = self.manager._recorder(call.id, row.user_id, persona, row.model)
        call.recorder.resume(items)
        call.recorder.cost = row.cost_usd
        call.agent = self.manager._agent(call.id, persona, call.recorder)
        self.calls[row.id] = call
        return call

    async def _direct_cap(self, call: DirectCall) -> str | None:
        assert call.recorder is not None
        if time.time() - call.created > self.manager.settings.max_call_seconds:
            return "max_duration"
        if call.recorder.cost >= self.manager.settings.max_call_cost_usd:
            return "max_cost"
        if await self.manager.day_costs.spent(call.user_id) >= self.manager.settings.daily_cost_cap_usd:
            return "daily_cost_cap"
        return None

    async def end(self, call: DirectCall, reason: str, *, cap: bool = False) -> None:
        self.calls.pop(call.id, None)
        await self.manager.slots.release(call.id)
        if self.manager.hub is not None and call.recorder is None:
            await self.manager.hub.delete(self.manager.hub.key("direct", call.id))
        if call.recorder is not None and await self.manager.store.end_call(call.id, reason=reason):
            self.manager.metrics.inc("parley_calls_ended_total", reason=reason)
        if cap:
            self.manager.metrics.inc("parley_caps_total", cap=reason)
        if call.upstream_call_id:
            self.manager._spawn(self.manager._hangup_quietly(call.upstream_call_id))


    async def hangup(self, principal: Principal, call_id: str) -> bool:
        """End a direct call of this user held here; True for a key nobody made a call with (never on record)."""
        direct = self.calls.get(call_id)
        if direct is None or direct.user_id != principal.user_id:
            return False
        await self.end(direct, "hangup")
        return direct.recorder is None

    async def hangup_pending(self, principal: Principal, call_id: str) -> bool:
        """Shared mode: a key minted at another process, not used yet; True if it was one."""
        hub = self.manager.hub
        if hub is None:
            return False
        pending = await hub.get_json(hub.key("direct", call_id))
        if pending is None or pending["user_id"] != principal.user_id:
            return False
        await hub.delete(hub.key("direct", call_id))
        await self.manager.slots.release(call_id)
        return True

    async def sweep(self) -> None:
        """Calls that stopped reporting, and ones past the duration cap, are over."""
        settings, now = self.manager.settings, time.time()
        for call in list(self.calls.values()):
            if call.recorder is None:
                if now - call.created > settings.ephemeral_key_ttl_seconds + 60:
                    self.calls.pop(call.id, None)  # a key nobody reported a call for
                continue
            if now - call.created > settings.max_call_seconds:
                await self.end(call, "max_duration", cap=True)
            elif not await self.manager.slots.holds(call.id):
                await self.end(call, "idle")

    async def shutdown(self, *, hand_over: bool = False) -> int:
        """Stopping: end the reported calls held here, or (`hand_over`: shared mode, a rolling restart,
        the calls go on upstream) clear their owner so another process claims them at once, and their
        next reports are recorded wherever they land. How many were handed over."""
        handed = 0
        for call in list(self.calls.values()):
            if call.recorder is None:
                continue
            try:
                if hand_over:
                    await self.manager.store.set_owner(call.id, None)
                    handed += 1
                else:
                    await self.manager.store.end_call(call.id, reason="server_shutdown")
            except Exception:
                log.exception("call %s: could not record its end or hand it over", call.id)
        self.calls.clear()
        return handed
