"""The call recorder: a call's server events in; stored transcript items, usage and cost out.

One recorder per call. It applies each event to a `ConversationState` (the protocol's one reading
of server events) and stores what changed: an item the moment it is complete with its words, in
conversation order; a truncated answer as the words that were heard; a deletion; each response's
usage and cost, and each transcription's. Transcript writes are queued for the store's next group
commit, which keeps a call's writes in order, without holding up the call's next events (`flush`
waits for them). It reads the same GA events whether they come from the
sideband of a server-held call or from a browser reporting its data channel.

An item's place is stored the moment the conversation places it (a `pending` row: id, role,
order, no words yet), its words when it completes. So a recorder that missed events (a sideband
that dropped, a process that took the call over from a dead one) knows what it must ask for.

It acts on nothing: what a persona's tools do and who speaks next belong to the call's app
(`parley.apps.negotiator.agent`), which reads the same changes. The one request it makes (with
`send`, on a server-held call) is `conversation.item.retrieve`: for a truncated answer, whose
heard words only the upstream knows; after a gap (`backfill`), for each item placed but not
complete; and for each previous item an event names that it never saw (placed on record at once,
so a recorder after it asks again if the answer never came).

It never swallows an exception: malformed input is the protocol's invalid-event change (counted in
`parley_invalid_events_total`); anything else is a bug and propagates to its caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from parley.protocol import changes as ch
from parley.protocol.conversation import ConversationState, Item
from parley.protocol.pricing import PriceTable
from parley.protocol.server_events import ServerEvent, read_server_event

from .db import ItemRecord, Store
from .errors import scrub
from .metrics import Metrics

log = logging.getLogger(__name__)

MAX_TEXT = 20_000
MAX_ID = 128
MAX_UNCOMMITTED = 32  # a call's transcript writes queued and not yet committed, before its events wait
PENDING = "pending"  # a placed item whose words have not arrived (hidden from the transcript)
# Events that name an item's previous item (a retrieved item does on Parley's engine, not on OpenAI:
# it lets a recorder walk back through a gap of several items).
PLACING = frozenset({"conversation.item.added", "conversation.item.done", "input_audio_buffer.committed",
                     "conversation.item.retrieved"})
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12 else 0


def _role_kind(item: Item) -> tuple[str, str]:
    if item.type == "function_call":
        return "assistant", "function_call"
    if item.type == "function_call_output":
        return "tool", "function_call_output"
    if item.type == "message":
        return (item.role if item.role in ("user", "assistant", "system") else "system"), "message"
    return "system", item.type[:32]


class Recorder:
    def __init__(
        self,
        store: Store,
        call_id: str,
        *,
        persona: str,
        model: str,
        transcription_model: str | None,
        prices: PriceTable,
        metrics: Metrics,
        send: Send | None = None,
        start_seq: float = 0.0,
        on_cost: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.call_id = store, call_id
        self.persona = persona  # who speaks for the assistant now: the id the call's app gave
        self.model = model
        self.transcription_model = transcription_model
        self.prices, self.metrics = prices, metrics
        self.send = send
        self.on_cost = on_cost
        self.clock = clock
        self.state = ConversationState()
        self.cost = 0.0
        self.errors = 0  # error events from the upstream
        self._base = start_seq
        self._seq: dict[str, float] = {}  # item id -> stored position
        self._stored: dict[str, tuple[str, str]] = {}  # item id -> (text, status) as stored
        self._persona_of: dict[str, str] = {}  # response or item id -> the persona that spoke it
        self._started: dict[str, dt.datetime] = {}
        self._asked: set[str] = set()  # items retrieved for a backfill, not yet answered
        self._uncommitted: deque[asyncio.Future[None]] = deque()  # transcript writes queued, in order

    async def handle(self, event: ServerEvent | dict[str, Any] | str | bytes) -> list[ch.Change]:
        """Record one server event; the changes it made (for the call's app to act on)."""
        if not isinstance(event, ServerEvent):
            event = read_server_event(event)
        changes = self.state.apply(event, self.clock())
        for change in changes:
            await self._record(change)
        if event.type in PLACING:
            previous = event.get("previous_item_id")
            if isinstance(previous, str) and previous and previous not in self.state and previous not in self._seq:
                await self._bookmark(previous[:MAX_ID], event)
                await self._ask(previous, "previous")
        return changes

    async def _bookmark(self, missed: str, event: ServerEvent) -> None:
        """An item this recorder missed (an event names it as the previous one): on record as placed,
        just before the item that names it, so that if this process dies before the upstream answers
        the retrieve, whoever takes the call over asks again."""
        item = event.get("item")
        naming = item.get("id") if isinstance(item, dict) else event.get("item_id")
        after = self._seq.get(naming[:MAX_ID]) if isinstance(naming, str) else None
        if after is None:
            after = max(self._seq.values(), default=self._base) + 1.0
        before = max((v for v in self._seq.values() if v < after), default=after - 1.0)
        self._seq[missed] = (before + after) / 2
        self._stored[missed] = ("", PENDING)
        await self._queue(self.store.save_item(self.call_id, ItemRecord(
            item_id=missed, seq=self._seq[missed], role="system", kind="message", persona=None, text="",
            status=PENDING)))

    def resume(self, items: list[Any]) -> None:
        """Carry on a call already on record (`Store.items(pending=True)`): its items as stored."""
        for row in items:
            self._seq[row.item_id] = row.seq
            self._stored[row.item_id] = (row.text, row.status)
            self._base = max(self._base, row.seq)

    @property
    def pending(self) -> list[str]:
        """The items placed on record whose words have not arrived."""
        return [i for i, (_text, status) in self._stored.items() if status == PENDING]

    async def backfill(self) -> int:
        """After a gap in the events: ask the upstream for every item placed but not complete
        (items it never placed are asked for when a later event names them). How many asked."""
        self._asked.clear()
        pending = self.pending
        for item_id in pending:
            await self._ask(item_id, "pending")
        return len(pending)

    async def _ask(self, item_id: str, why: str) -> None:
        if self.send is not None and item_id not in self._asked:
            self._asked.add(item_id)
            self.metrics.inc("parley_backfill_requests_total", reason=why)
            await self.send({"type": "conversation.item.retrieve", "item_id": item_id})

    async def _queue(self, write: asyncio.Future[None]) -> None:
        """A transcript write the call's next events need not wait for (the store commits a call's
        writes in order): its failure is counted and logged when it comes. Past MAX_UNCOMMITTED
        queued, the events wait for the oldest (a database that falls behind slows the call's
        recording, not the process's memory)."""
        write.add_done_callback(self._committed)
        self._uncommitted.append(write)
        while len(self._uncommitted) > MAX_UNCOMMITTED:
            await asyncio.wait([self._uncommitted[0]])

    def _committed(self, write: asyncio.Future[None]) -> None:
        self._uncommitted.remove(write)
        if not write.cancelled() and write.exception() is not None:
            self.metrics.inc("parley_recorder_errors_total")
            log.error("call %s: storing a transcript item failed", self.call_id, exc_info=write.exception())

    async def flush(self) -> None:
        """Wait until every write queued so far is committed (or failed, and counted)."""
        if self._uncommitted:
            await asyncio.wait(list(self._uncommitted))

    def set_persona(self, persona: str) -> None:
        """The call's app handed the call to `persona`: what is said from now on is theirs."""
        self.persona = persona

    # -- changes ----------------------------------------------------------------------------------

    async def _record(self, change: ch.Change) -> None:
        if isinstance(change, ch.ItemPlaced):
            self._started[change.item.id] = dt.datetime.fromtimestamp(change.item.created_at, dt.UTC)
            rid = change.item.response_id
            self._persona_of[change.item.id] = self._persona_of.get(rid, self.persona) if rid else self.persona
            await self._placed(change.item)
        elif isinstance(change, ch.ItemCompleted):
            await self._completed(change)
        elif isinstance(change, ch.ItemTruncated):
            await self._truncated(change)
        elif isinstance(change, ch.ItemRetrieved):
            await self._retrieved(change)
        elif isinstance(change, ch.ItemDeleted):
            await self._deleted(change.item_id)
        elif isinstance(change, ch.ResponseStarted):
            self._persona_of[change.response.id] = self.persona
        elif isinstance(change, ch.ResponseDone):
            await self._response_done(change)
        elif isinstance(change, ch.SessionChanged):
            self._session(change.session)
        elif isinstance(change, ch.ErrorReceived):
            self.errors += 1
            log.info("call %s: upstream error %s: %s", self.call_id, (change.code or "")[:64],
                     scrub(change.message)[:300])
        elif isinstance(change, ch.InvalidEvent):
            self.metrics.inc("parley_invalid_events_total")
            log.info("call %s: an invalid event: %s", self.call_id, change.reason[:200])

    def _session(self, session: dict[str, Any]) -> None:
        model = session.get("model")
        if isinstance(model, str) and model:
            self.model = model[:MAX_ID]
        audio = session.get("audio")
        inp = audio.get("input") if isinstance(audio, dict) else None
        transcription = inp.get("transcription") if isinstance(inp, dict) else None
        if isinstance(transcription, dict) and isinstance(transcription.get("model"), str):
            self.transcription_model = transcription["model"][:MAX_ID]

    def _position(self, item: Item) -> float:
        """Where a newly stored item goes: between the stored items around it in the conversation."""
        ids = self.state.ids
        at = ids.index(item.id) if item.id in self.state else len(ids)
        before = next((self._seq[i] for i in reversed(ids[:at]) if i in self._seq), None)
        after = next((self._seq[i] for i in ids[at + 1:] if i in self._seq), None)
        if after is None:  # nothing stored follows it
            return max(self._seq.values(), default=self._base) + 1.0
        if before is None:
            before = max((v for v in self._seq.values() if v < after), default=after - 2.0)
        return (before + after) / 2

    async def _completed(self, change: ch.ItemCompleted) -> None:
        item = change.item
        if change.usage is not None:
            await self._transcription_usage(item.id, change.usage)
        if item.out_of_band:
            return  # not part of the conversation
        role, kind = _role_kind(item)
        data: dict[str, Any] | None = None
        if kind == "message":
            text = change.text
        elif kind == "function_call":
            arguments = item.arguments[:MAX_TEXT]
            data = {"name": (item.name or "")[:64], "arguments": arguments, "call_id": (item.call_id or "")[:MAX_ID]}
            text = f"{data['name']}({arguments})"
        elif kind == "function_call_output":
            output = (item.output or "")[:MAX_TEXT]
            data = {"call_id": (item.call_id or "")[:MAX_ID], "output": output}
            text = output
        else:
            text, data = "", {"type": kind}
        if item.transcription_failed and item.final_text is None:
            status = "failed"
        elif item.truncated_ms is not None:
            status, text = "truncated", item.heard_text
        else:
            status = "completed" if item.status == "completed" else "incomplete"
        await self._save(item, role, kind, text[:MAX_TEXT], status, data)

    async def _placed(self, item: Item) -> None:
        """Store where a new item goes, before its words arrive (a later recorder may need it)."""
        if not item.out_of_band and item.id[:MAX_ID] not in self._seq:
            role, kind = _role_kind(item)
            await self._save(item, role, kind, "", PENDING, None)

    async def _save(self, item: Item, role: str, kind: str, text: str, status: str,
                    data: dict[str, Any] | None) -> None:
        item_id = item.id[:MAX_ID]
        before = self._stored.get(item_id)
        if before == (text, status):
            return
        if item_id not in self._seq:
            self._seq[item_id] = self._position(item)
        await self._queue(self.store.save_item(self.call_id, ItemRecord(
            item_id=item_id, seq=self._seq[item_id], role=role, kind=kind,
            persona=self._persona_of.get(item.id, self.persona) if role == "assistant" else None,
            text=text, status=status, data=data,
            audio_end_ms=int(item.truncated_ms) if item.truncated_ms is not None else None,
            started_at=self._started.get(item.id))))
        self._stored[item_id] = (text, status)
        self._asked.discard(item_id)
        if status != PENDING and (before is None or before[1] == PENDING):
            self.metrics.inc("parley_transcript_items_total", role=role)

    async def _truncated(self, change: ch.ItemTruncated) -> None:
        item_id = change.item_id[:MAX_ID]
        if item_id in self._stored and self._stored[item_id][1] != PENDING:
            text, _status = self._stored[item_id]
            await self._queue(self.store.update_item(self.call_id, item_id, status="truncated",
                                               audio_end_ms=change.audio_end_ms))
            self._stored[item_id] = (text, "truncated")
        if self.send is not None:
            # The upstream's copy says what was heard (Parley's engine trims the transcript to it).
            await self.send({"type": "conversation.item.retrieve", "item_id": change.item_id})

    async def _retrieved(self, change: ch.ItemRetrieved) -> None:
        item = change.item
        if item is None or item.truncated_ms is None or item.type != "message":
            return
        item_id = item.id[:MAX_ID]
        stored = self._stored.get(item_id)
        heard = item.heard_text[:MAX_TEXT]
        if stored is not None and heard != stored[0]:
            await self._queue(self.store.update_item(self.call_id, item_id, text=heard, data={"said": item.text[:MAX_TEXT]}))
            self._stored[item_id] = (heard, stored[1])

    async def _deleted(self, item_id: str) -> None:
        item_id = item_id[:MAX_ID]
        if self._stored.get(item_id, ("", ""))[1] == PENDING:  # never had words: no trace of it
            await self._queue(self.store.delete_item(self.call_id, item_id))
            del self._stored[item_id], self._seq[item_id]
        elif item_id in self._stored:
            await self._queue(self.store.update_item(self.call_id, item_id, status="deleted"))
            self._stored[item_id] = (self._stored[item_id][0], "deleted")

    async def _response_done(self, change: ch.ResponseDone) -> None:
        rid = change.response.id[:MAX_ID]
        if not rid or change.usage is None:
            return
        usage = change.usage
        cost = self.prices.response_cost(self.model, usage)
        await self._usage("response", rid, self._persona_of.get(change.response.id, self.persona), self.model,
                          change.status[:32], usage, cost)

    async def _transcription_usage(self, item_id: str, usage: dict[str, Any]) -> None:
        model = self.transcription_model or "unknown"
        await self._usage("transcription", item_id[:MAX_ID], None, model, "completed", usage,
                          self.prices.transcription_cost(model, usage))

    async def _usage(self, kind: str, ref: str, persona: str | None, model: str, status: str | None,
                     usage: dict[str, Any], cost: float) -> None:
        input_tokens, output_tokens = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        added = await self.store.add_usage(self.call_id, kind=kind, ref_id=ref, persona=persona, model=model[:MAX_ID],
                                           status=status, input_tokens=input_tokens, output_tokens=output_tokens,
                                           usage=usage, cost_usd=cost)
        if not added:
            return
        self.cost += cost
        self.metrics.inc("parley_tokens_total", input_tokens, direction="input")
        self.metrics.inc("parley_tokens_total", output_tokens, direction="output")
        self.metrics.inc("parley_cost_usd_total", cost)
        if self.on_cost is not None:
            await self.on_cost()
