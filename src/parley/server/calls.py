"""Live calls: server-held calls with their sideband, caps; browser-direct ones in `direct_calls`.

A server-held call (`POST /api/calls`) is created upstream with the persona's session, then the
server opens the call's sideband WebSocket *before* it hands the SDP answer back, so recording
starts before the first word. The sideband loop feeds every event to the call's `Recorder`; caps
(duration, cost per call, the user's daily cost) are checked on a timer and after every response,
and a call over a cap is hung up upstream and recorded with the cap as its end reason.

A browser-direct call (`POST /api/session`) reports its events to the server
(`parley.server.direct_calls`); this module holds what both kinds share (slots, caps, recorders).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from parley.apps.negotiator.agent import EscalationError, NegotiatorAgent
from parley.apps.scenarios import Persona, get_persona
from parley.protocol import changes as ch
from parley.protocol import ids
from parley.protocol.pricing import PriceTable

from .auth import Principal
from .costs import DayCosts, StoredDayCosts
from .db import Store
from .direct_calls import DirectCalls
from .errors import ApiError
from .limits import CallSlots, Slots, retry_after
from .metrics import Metrics
from .personas import CallPersona, persona_session
from .recorder import Recorder
from .settings import ServerSettings
from .takeover import Takeover
from .upstream import CALL_GONE, Upstream, UpstreamError

log = logging.getLogger(__name__)

SIDEBAND_RECONNECT_SECONDS = 30.0  # how long a dropped sideband is retried while the upstream has the call
# Close codes after which the call may well go on without us (abnormal closure, server errors, restarts).
ABNORMAL_CLOSES = frozenset({1006, 1011, 1012, 1013, 1014})


def new_call_id() -> str:
    return ids.new_id("call")  # the protocol's id format


def seconds_to_midnight_utc() -> float:
    now = dt.datetime.now(dt.UTC)
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


@dataclass
class LiveCall:
    id: str
    user_id: str
    limit_key: str
    upstream_call_id: str
    conn: Any  # the SDK's AsyncRealtimeConnection (send(dict), recv_bytes(), close())
    recorder: Recorder = field(init=False)
    agent: NegotiatorAgent | None = None
    self_url: str | None = None
    caller: str | None = None  # a phone call's number (SIP From), else None
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)
    end_reason: str | None = None
    handover: bool = False  # shutting down in shared mode: let go of the call, another process holds it on
    lost: bool = False  # another process claimed it (this one stalled past its lease): let go, owner kept
    task: asyncio.Task[None] | None = None
    timer: asyncio.Task[None] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class BridgedCall(Protocol):
    """A call whose audio the server itself carries (a phone call, `server.telephony`)."""

    id: str
    user_id: str
    agent: NegotiatorAgent | None

    async def end(self, reason: str) -> None: ...


class CallManager:
    """The calls this process holds. In shared mode (`hub`, PARLEY_REDIS_URL) the slots are in Redis,
    browser-direct calls awaiting their first report too, and each call row names its owner process."""

    def __init__(self, settings: ServerSettings, store: Store, upstream: Upstream, metrics: Metrics,
                 prices: PriceTable, *, slots: Slots | None = None, day_costs: DayCosts | None = None,
                 hub: Any = None) -> None:
        self.settings, self.store, self.upstream = settings, store, upstream
        self.metrics, self.prices = metrics, prices
        self.slots: Slots = slots or CallSlots()
        self.hub = hub  # parley.server.shared.SharedHub, or None (one process)
        self.owner: str | None = hub.process_id if hub is not None else None
        self.live: dict[str, LiveCall] = {}
        self.directs = DirectCalls(self)
        self.direct = self.directs.calls  # browser-direct calls held here
        self.bridged: dict[str, BridgedCall] = {}  # registered by their bridge while they last
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.day_costs: DayCosts = day_costs or StoredDayCosts(store)
        self.takeover = Takeover(self) if hub is not None else None  # shared mode: dead processes' calls
        self.commands: Any = None  # shared.commands.Commands: commands for calls held here
        if hub is not None:
            from .shared.commands import Commands  # (redis-py: only in shared mode)

            self.commands = Commands(hub, self._command, self._announced)
        metrics.gauge("parley_calls_active", lambda: float(self.active_count()))

    def active_count(self) -> int:
        """Server-held calls in progress and browser-direct calls that have reported (a minted key alone is
        not a call yet)."""
        return len(self.live) + len(self.bridged) + self.directs.reported()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.takeover is None:
            ended = await self.store.end_stale_calls()
            if ended:
                log.info("marked %d calls left active by a previous run as ended (server_restart)", ended)
        else:  # other processes' calls go on; those of processes that died are taken over
            assert self.commands is not None
            await self.commands.start()
            claimed = await self.takeover.sweep()
            if claimed:
                log.info("took over %d calls of processes that stopped", claimed)
            self.takeover.start()
        self._sweeper = asyncio.create_task(self._sweep())

    async def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.takeover is not None:
            await self.takeover.stop()
        if self.commands is not None:
            await self.commands.stop()
        handing = self.hub is not None and self.upstream.kind != "local"
        if handing and self.live:
            # A rolling restart: the calls go on upstream; let go of them and have another process
            # claim each at once (`hand_over`). (With the in-process engine they end with it.)
            await self.hand_over()
        await asyncio.gather(*(self.end(c, "server_shutdown") for c in list(self.live)),
                             *(b.end("server_shutdown") for b in list(self.bridged.values())), return_exceptions=True)
        if await self.directs.shutdown(hand_over=handing) and self.commands is not None:
            with contextlib.suppress(Exception):  # (else claimed at the others' next sweep)
                await self.commands.broadcast("sweep")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def hand_over(self) -> int:
        """Shared mode, shutting down: stop holding each server-held call without ending it (its
        sideband closed, its row's owner cleared), then tell the other processes to claim them now
        (`Takeover.sweep`; what was said in between is backfilled). How many were handed over."""
        lives = list(self.live.values())
        for live in lives:
            live.handover = True
        await asyncio.gather(*(self._let_go(live) for live in lives), return_exceptions=True)
        released = sum(1 for live in lives if live.handover)
        if released and self.commands is not None:
            try:
                await self.commands.broadcast("sweep")
            except Exception:  # (the others still claim them on their next sweep)
                log.exception("could not announce the handed-over calls")
        log.info("handed over %d calls to the other processes", released)
        return released

    async def _let_go(self, live: LiveCall) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.conn.close(), 3)
        try:
            await asyncio.wait_for(live.closed.wait(), 5)
        except TimeoutError:
            if live.task is not None:
                live.task.cancel()
            await asyncio.wait_for(live.closed.wait(), 5)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a call task failed", exc_info=task.exception())

    # -- shared checks --------------------------------------------------------------------------

    def _recorder(self, call_id: str, user_id: str, persona: CallPersona, model: str, *, send: Any = None,
                  on_cost: Callable[[], Awaitable[None]] | None = None, start_seq: float = 0.0) -> Recorder:
        """A call's recorder; every cost it adds counts towards its user's day (then `on_cost`)."""
        async def costed() -> None:
            await self.day_costs.record(user_id, call_id, recorder.cost)
            if on_cost is not None:
                await on_cost()

        recorder = Recorder(self.store, call_id, persona=persona.id, model=model,
                            transcription_model=self.settings.transcription_model, prices=self.prices,
                            metrics=self.metrics, send=send, on_cost=costed, start_seq=start_seq)
        return recorder

    def _agent(self, call_id: str, persona: CallPersona, recorder: Recorder, send: Any = None) -> NegotiatorAgent | None:
        """The persona's part of the call (tools, outcome, hand-over); the copilot has none."""
        if not isinstance(persona, Persona):
            return None

        async def on_outcome(outcome: dict[str, Any]) -> None:
            await self.store.set_outcome(call_id, outcome)

        async def on_persona(new: Persona) -> None:
            recorder.set_persona(new.id)
            await self.store.add_persona(call_id, new.id, new.name)

        def on_tool(name: str) -> None:
            self.metrics.inc("parley_tool_calls_total",
                             name=name if name in ("record_outcome", persona.handoff_tool) else "other")

        return NegotiatorAgent(persona, session_for=lambda p: persona_session(p, self.settings, update=True),
                               on_outcome=on_outcome, on_persona=on_persona, on_tool=on_tool, send=send)

    async def _apply(self, recorder: Recorder, agent: NegotiatorAgent | None, event: Any) -> list[ch.Change]:
        """One event through the call's recorder, then its app."""
        changes = await recorder.handle(event)
        if agent is not None:
            await agent.on_changes(changes)
        return changes

    async def check_daily_cap(self, user_id: str) -> None:
        """Before a new call: refuse a user whose calls today reached the daily cap.

        (Calls in progress are checked after every response too.)"""
        spent = await self.day_costs.spent(user_id)
        if spent >= self.settings.daily_cost_cap_usd:
            self.metrics.inc("parley_rate_limited_total", reason="daily_cost_cap")
            raise ApiError(429, f"Today's calls have used the daily cost cap (${self.settings.daily_cost_cap_usd:.2f}); "
                                "it resets at midnight UTC.", "daily_cost_cap",
                           headers={"Retry-After": retry_after(seconds_to_midnight_utc())})

    async def take_slot(self, principal: Principal, call_id: str, ttl: float | None = None) -> None:
        if not await self.slots.try_take(principal.limit_key, call_id, self.settings.max_concurrent_calls, ttl):
            self.metrics.inc("parley_rate_limited_total", reason="concurrent_calls")
            raise ApiError(429, f"At most {self.settings.max_concurrent_calls} calls at a time; hang up one first.",
                           "too_many_calls", headers={"Retry-After": "5"})

    # -- browser-direct calls (`direct_calls`) ---------------------------------------------------

    async def register_direct(self, principal: Principal, persona: CallPersona, model: str, ttl: int) -> str:
        return await self.directs.register_direct(principal, persona, model, ttl)

    async def unregister_direct(self, call_id: str) -> None:
        await self.directs.unregister_direct(call_id)

    async def report(self, principal: Principal, call_id: str, events: list[Any],
                     upstream_call_id: str | None) -> dict[str, Any]:
        return await self.directs.report(principal, call_id, events, upstream_call_id)

    # -- server-held calls ----------------------------------------------------------------------

    async def start_call(self, principal: Principal, persona: CallPersona, sdp: str, *, self_url: str | None) -> tuple[str, str]:
        """Create the call upstream, start recording it; (call id, SDP answer)."""
        call_id = new_call_id()
        await self.take_slot(principal, call_id)
        try:
            await self.check_daily_cap(principal.user_id)
            answer, upstream_id = await self.upstream.create_call(sdp, persona_session(persona, self.settings))
            await self._hold(principal, persona, call_id, upstream_id, self_url=self_url)
        except BaseException:
            await self.slots.release(call_id)
            raise
        self.metrics.inc("parley_calls_total", kind="server")
        return call_id, answer

    async def start_phone_call(self, principal: Principal, persona: CallPersona, upstream_id: str, *,
                               self_url: str | None, caller: str | None = None) -> LiveCall:
        """Accept a SIP call announced by webhook (the caller's limits and caps first) and record it
        like a server-held call; the persona greets first. ApiError (429: limits, caps) when refused:
        the caller rejects it upstream."""
        call_id = new_call_id()
        await self.take_slot(principal, call_id)
        try:
            await self.check_daily_cap(principal.user_id)
            await self.upstream.accept_call(upstream_id, persona_session(persona, self.settings))
            live = await self._hold(principal, persona, call_id, upstream_id, self_url=self_url,
                                    channel="phone", caller=caller)
        except BaseException:
            await self.slots.release(call_id)
            raise
        self.metrics.inc("parley_calls_total", kind="phone")
        await live.conn.send({"type": "response.create"})  # on a phone the agent speaks first
        return live

    async def _hold(self, principal: Principal, persona: CallPersona, call_id: str, upstream_id: str, *,
                    self_url: str | None, channel: str | None = None, caller: str | None = None) -> LiveCall:
        """Put a call the upstream has started on record, and hold its sideband."""
        # The record and the sideband at once (the sideband's events wait in its socket until the
        # recorder reads them, after both are done).
        stored, opened = await asyncio.gather(
            self.store.create_call(id=call_id, user_id=principal.user_id, kind="server", persona=persona.id,
                                   persona_name=persona.name, model=self.settings.model,
                                   upstream_call_id=upstream_id, owner=self.owner, channel=channel, caller=caller),
            self.upstream.sideband(upstream_id, self_url=self_url), return_exceptions=True)
        if isinstance(stored, BaseException) or isinstance(opened, BaseException):
            self._spawn(self._hangup_quietly(upstream_id))
            if not isinstance(opened, BaseException):
                with contextlib.suppress(Exception):
                    await opened.close()
            if isinstance(stored, BaseException):
                raise stored
            with contextlib.suppress(Exception):
                await self.store.end_call(call_id, status="failed", reason="sideband_failed")
            assert isinstance(opened, BaseException)
            raise opened
        live = LiveCall(call_id, principal.user_id, principal.limit_key, upstream_id, conn=opened, self_url=self_url)
        live.recorder = self._recorder(call_id, principal.user_id, persona, self.settings.model, send=self._sender(live),
                                       on_cost=lambda: self._check_costs(live))
        live.agent = self._agent(call_id, persona, live.recorder, send=self._sender(live))
        self.live[call_id] = live
        live.task = asyncio.create_task(self._run(live), name=f"sideband-{call_id}")
        live.timer = asyncio.create_task(self._deadline(live), name=f"deadline-{call_id}")
        if self.takeover is not None:
            await self.takeover.remember(call_id, principal.limit_key)
        return live

    async def adopt(self, row: Any, conn: Any, *, limit_key: str, persona: CallPersona, deadline: float,
                    items: list[Any]) -> LiveCall:
        """Hold a call on record that another process held (it died; `parley.server.takeover`): its
        sideband `conn` re-attached, recording and caps carried on from the stored row and items."""
        live = LiveCall(row.id, row.user_id, limit_key, row.upstream_call_id, conn=conn, caller=row.caller)
        live.recorder = self._recorder(row.id, row.user_id, persona, row.model, send=self._sender(live),
                                       on_cost=lambda: self._check_costs(live))
        live.recorder.resume(items)
        live.recorder.cost = row.cost_usd
        live.agent = self._agent(row.id, persona, live.recorder, send=self._sender(live))
        await self.slots.try_take(limit_key, row.id, 10**6)  # its slot lapsed with the dead process
        self.live[row.id] = live
        live.task = asyncio.create_task(self._run(live), name=f"sideband-{row.id}")
        live.timer = asyncio.create_task(self._deadline(live, deadline), name=f"deadline-{row.id}")
        await self._resume(live)
        return live

    @staticmethod
    def _sender(live: LiveCall) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def send(event: dict[str, Any]) -> None:
            await live.conn.send(event)  # the current connection (a reconnect replaces it)
        return send

    async def _reconnect(self, live: LiveCall) -> bool:
        """The sideband dropped without a close (network trouble, the upstream restarting it), the call
        may go on: open it again, with backoff, while the upstream still has the call; then backfill."""
        deadline, attempt = time.monotonic() + SIDEBAND_RECONNECT_SECONDS, 0
        while time.monotonic() < deadline and live.end_reason is None and not live.handover:
            live.reconnects, attempt = live.reconnects + 1, attempt + 1
            await asyncio.sleep(min(2.0, 0.25 * 2 ** min(attempt - 1, 4)))
            try:
                live.conn = await self.upstream.sideband(live.upstream_call_id, self_url=live.self_url)
            except UpstreamError as exc:
                log.info("call %s: sideband reconnect %d failed: %s", live.id, live.reconnects, exc.message)
                if exc.code == CALL_GONE:
                    return False
                continue
            log.info("call %s: sideband reconnected", live.id)
            self.metrics.inc("parley_upstream_errors_total", operation="sideband", status="reconnected")
            await self._resume(live)
            return True
        return False

    async def _resume(self, live: LiveCall) -> None:
        """A sideband (re)attached after a gap: ask for what was missed; whether a response is still
        active is unknown (if one is, a response.create earns an error the agent answers by waiting)."""
        asked = await live.recorder.backfill()
        if asked:
            log.info("call %s: backfilling %d items", live.id, asked)
        if live.agent is not None:
            live.agent.forget_response()

    async def _run(self, live: LiveCall) -> None:
        from websockets.exceptions import ConnectionClosed

        reason = "upstream_closed"
        try:
            while True:
                try:
                    raw = await live.conn.recv_bytes()
                except ConnectionClosed as exc:
                    if live.handover:
                        break
                    close = exc.rcvd
                    if close is None or close.code in ABNORMAL_CLOSES:
                        if await self._reconnect(live):
                            continue
                        reason = "sideband_lost"
                    elif close.reason:
                        reason = f"upstream_closed:{close.reason}"[:128]
                    break
                try:
                    await self._apply(live.recorder, live.agent, raw)
                except asyncio.CancelledError:
                    raise
                except ConnectionClosed:
                    # The agent's answer (a tool's output) met a closed sideband: the next read
                    # sees the close and reconnects as any drop does; what it sent is lost.
                    self.metrics.inc("parley_upstream_errors_total", operation="sideband", status="send_closed")
                    log.warning("call %s: the sideband closed while the agent was sending", live.id)
                except Exception:
                    # A bug, not bad input (that is an invalid-event change): counted and logged, and the
                    # call goes on being recorded.
                    self.metrics.inc("parley_recorder_errors_total")
                    log.exception("call %s: recording an event failed", live.id)
        except asyncio.CancelledError:
            reason = live.end_reason or "server_shutdown"
        except Exception:
            log.exception("call %s: the sideband failed", live.id)
            reason = "sideband_error"
        finally:
            await self._finish(live, live.end_reason or reason)

    async def _finish(self, live: LiveCall, reason: str) -> None:
        self.live.pop(live.id, None)
        if live.handover and live.end_reason is None:
            await self._released(live)
            return
        try:
            await self.slots.release(live.id)
        except Exception:  # (Redis down: the slot's lease lapses by itself)
            log.exception("call %s: could not release its slot", live.id)
        if live.timer is not None and live.timer is not asyncio.current_task() and live.end_reason != "max_duration":
            live.timer.cancel()  # (unless the timer is the one ending the call)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.conn.close(), 3)
        try:
            if await self.store.end_call(live.id, reason=reason):
                self.metrics.inc("parley_calls_ended_total", reason=reason.split(":")[0])
        except Exception:
            log.exception("call %s: could not record its end", live.id)
        if self.takeover is not None:
            with contextlib.suppress(Exception):
                await self.takeover.forget(live.id)
        live.closed.set()

    async def _released(self, live: LiveCall) -> None:
        """A call handed over: not ended, its slot and facts left for whoever claims it (the slot is
        no longer renewed here, so it lapses unless the claimer takes it)."""
        if live.timer is not None:
            live.timer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.conn.close(), 3)
        if live.lost:  # the row names its new owner: nothing of it is ours to clear
            self.metrics.inc("parley_calls_lost_total")
            log.warning("call %s: another process holds it now (this one stalled past its lease); let go", live.id)
        else:
            await self._hand(live)
        self.slots.forget(live.id)
        live.closed.set()

    async def _hand(self, live: LiveCall) -> None:
        try:
            await self.store.set_owner(live.id, None)
            self.metrics.inc("parley_handovers_total")
        except Exception:  # its owner's heartbeat lapses instead: taken over as after a crash
            live.handover = False
            log.exception("call %s: could not release it for another process", live.id)

    async def _deadline(self, live: LiveCall, at: float | None = None) -> None:
        """End the call at its duration cap (`at`: a time.monotonic() instant; else from now)."""
        await asyncio.sleep(self.settings.max_call_seconds if at is None else max(0.0, at - time.monotonic()))
        self.metrics.inc("parley_caps_total", cap="max_duration")
        await self.end(live.id, "max_duration")

    async def _check_costs(self, live: LiveCall) -> None:
        reason = None
        if live.recorder.cost >= self.settings.max_call_cost_usd:
            reason = "max_cost"
        elif await self.day_costs.spent(live.user_id) >= self.settings.daily_cost_cap_usd:
            reason = "daily_cost_cap"
        if reason is not None and live.end_reason is None:
            self.metrics.inc("parley_caps_total", cap=reason)
            self._spawn(self.end(live.id, reason))  # not awaited here: this runs inside the sideband loop

    async def _hangup_quietly(self, upstream_id: str) -> None:
        # Shielded: with the in-process engine the hangup runs inside this task, and a hangup cut
        # short would leave the engine's call half closed.
        task = asyncio.ensure_future(self.upstream.hangup(upstream_id))
        try:
            await asyncio.shield(task)
        except UpstreamError as exc:
            log.info("hangup of %s upstream failed: %s", upstream_id, exc.message)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise

    async def end(self, call_id: str, reason: str) -> bool:
        """Hang a server-held call up (upstream too) and record why; False if it is not live."""
        live = self.live.get(call_id)
        if live is None:
            return False
        if live.end_reason is None:
            live.end_reason = reason
        await self._hangup_quietly(live.upstream_call_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.conn.close(), 3)
        try:
            await asyncio.wait_for(live.closed.wait(), 5)
        except TimeoutError:
            if live.task is not None:
                live.task.cancel()
            try:
                await asyncio.wait_for(live.closed.wait(), 5)
            except TimeoutError:
                log.error("call %s: the sideband loop did not stop", live.id)
        return True

    async def escalate(self, call_id: str) -> Persona:
        live: LiveCall | BridgedCall | None = self.live.get(call_id) or self.bridged.get(call_id)
        if live is None and self.commands is not None:
            row = await self.store.get_call(call_id)
            if row is not None and row.status == "active" and self._elsewhere(row):
                assert row.owner is not None  # its agent is at its owner: the command goes there
                return get_persona((await self.commands.send(row.owner, "escalate", call_id))["persona"])
        if live is None:
            direct = self.direct.get(call_id)
            if direct is not None:
                raise ApiError(409, "A browser-direct call switches persona itself (session.update on its data "
                                    "channel); the server holds no sideband for it.", "not_server_call")
            raise ApiError(409, "The call is not in progress.", "call_not_active")
        if live.agent is None:
            raise ApiError(409, "This call has nobody to hand over to.", "no_supervisor")
        try:
            return await live.agent.escalate()
        except EscalationError as exc:
            raise ApiError(409, exc.message, exc.code) from None

    async def hangup(self, principal: Principal, call_id: str) -> tuple[str, str | None]:
        """End a call of this user: (status, end reason). A call already over stays as it was."""
        live = self.live.get(call_id)
        if live is not None and live.user_id == principal.user_id:
            await self.end(call_id, "hangup")
        bridged = self.bridged.get(call_id)
        if bridged is not None and bridged.user_id == principal.user_id:
            await bridged.end("hangup")
        if await self.directs.hangup(principal, call_id):
            return "ended", "hangup"  # a key nobody made a call with: never on record
        row = await self.store.get_call(call_id)
        if row is None and await self.directs.hangup_pending(principal, call_id):
            return "ended", "hangup"
        if row is None or row.user_id != principal.user_id:
            raise ApiError(404, "No such call.", "call_not_found")
        if row.status == "active" and row.kind == "direct":
            await self.slots.release(call_id)
            await self.store.end_call(call_id, reason="hangup")
            return "ended", "hangup"
        if row.status == "active" and self._elsewhere(row) and row.upstream_call_id:
            if self.upstream.kind != "local":
                # Straight to the upstream (safe: a hangup is idempotent). The end is on record first,
                # so the owner, seeing its sideband close, records nothing else.
                await self.store.end_call(call_id, reason="hangup")
                await self._hangup_quietly(row.upstream_call_id)
                return "ended", "hangup"
            assert self.commands is not None and row.owner is not None  # the owner's own engine has it
            await self.commands.send(row.owner, "hangup", call_id)
            row = await self.store.get_call(call_id) or row
        return row.status, row.end_reason

    def _elsewhere(self, row: Any) -> bool:
        """Shared mode: a server-held call another process holds."""
        return self.hub is not None and row.kind == "server" and row.owner is not None and row.owner != self.owner

    def _announced(self, op: str) -> None:
        if op == "sweep" and self.takeover is not None:  # a process stopping handed its calls over
            self.takeover.wake()

    async def _command(self, op: str, call_id: str) -> dict[str, Any]:
        """A command from another process for a call this one holds (`shared.commands`)."""
        if op == "escalate":
            persona = await self.escalate(call_id)
            return {"persona": persona.id}
        if op == "hangup":
            await self.end(call_id, "hangup")
            return {}
        raise ApiError(400, f"Unknown command {op!r}.", "bad_command")

    async def _sweep(self) -> None:
        """Browser-direct calls that stopped reporting, and ones past the duration cap, are over."""
        while True:
            await asyncio.sleep(min(30.0, self.settings.direct_idle_seconds / 2))
            try:
                await self.directs.sweep()
            except Exception:
                log.exception("the call sweeper failed")

