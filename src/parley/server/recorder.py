"""The call recorder: a call's server events in, stored transcript items, usage, cost and outcome out.

One recorder per call. It reads the same GA events whether they come from the sideband WebSocket
of a server-held call or from a browser reporting its data channel (`/api/calls/{id}/events`);
only a server-held call has `send`, and only then does the recorder act: it answers the
scenario's tools (`record_outcome`, the handoff tool) with `function_call_output`, switches the
persona with `session.update` and asks for the next response.

Items are stored in conversation order (each item's position comes from `previous_item_id` when it
is added, which is the order people spoke in) and each one is committed as soon as it is complete:
a user's audio turn when its transcript arrives, everything else at `conversation.item.done` or
`response.output_item.done`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from parley.apps.scenarios import Persona, persona_for_instructions
from parley.protocol.pricing import PriceTable

from .db import ItemRecord, Store, utcnow
from .errors import ApiError, scrub
from .metrics import Metrics

log = logging.getLogger(__name__)

OUTCOME_TOOL = "record_outcome"
MAX_TEXT = 20_000
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Item:
    role: str
    kind: str
    persona: str | None
    started_at: dt.datetime
    waiting_transcript: bool = False


def _s(value: Any, limit: int = 256) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12 else 0


def message_text(item: dict[str, Any]) -> tuple[str, bool]:
    """The words of a message item, and whether some audio part still has no transcript."""
    texts: list[str] = []
    pending = False
    content = item.get("content")
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text") or ""))
        elif kind in ("input_audio", "output_audio", "audio"):
            transcript = part.get("transcript")
            if isinstance(transcript, str):
                texts.append(transcript)
            elif kind == "input_audio":
                pending = True
    return " ".join(t.strip() for t in texts if t and t.strip())[:MAX_TEXT], pending


def parse_outcome(arguments: str | None, persona: Persona) -> dict[str, Any]:
    """The negotiation outcome from `record_outcome` arguments (ValueError when they make no sense)."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        raise ValueError("the arguments are not JSON") from None
    if not isinstance(args, dict):
        raise ValueError("the arguments must be a JSON object")
    bill = float(persona.scenario.monthly_bill)
    try:
        new = float(args["new_monthly_price"])
        old = float(args.get("old_monthly_price") or bill)
    except (KeyError, TypeError, ValueError):
        raise ValueError("new_monthly_price (and old_monthly_price) must be numbers") from None
    if not (0 <= new <= 100_000 and 0 < old <= 100_000):
        raise ValueError("prices must be between 0 and 100000")
    term = args.get("term_months")
    term_months = int(term) if isinstance(term, int | float) and not isinstance(term, bool) and 0 < term <= 120 else None
    monthly = round(old - new, 2)
    return {
        "new_monthly_price": round(new, 2),
        "old_monthly_price": round(old, 2),
        "monthly_savings": monthly,
        "term_months": term_months,
        "total_savings": round(monthly * term_months, 2) if term_months else None,
        "plan": _s(args.get("plan")),
        "accepted_by": _s(args.get("accepted_by"), 64) or persona.name,
        "persona": persona.id,
        "recorded_at": utcnow().isoformat(),
    }


class Recorder:
    def __init__(
        self,
        store: Store,
        call_id: str,
        *,
        persona: Persona,
        model: str,
        transcription_model: str | None,
        prices: PriceTable,
        metrics: Metrics,
        session_for: Callable[[Persona], dict[str, Any]],
        handoff_note: Callable[[Persona, Persona], str],
        send: Send | None = None,
        start_seq: float = 0.0,
        on_cost: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store, self.call_id = store, call_id
        self.persona = persona
        self.model = model
        self.transcription_model = transcription_model
        self.prices, self.metrics = prices, metrics
        self.session_for, self.handoff_note = session_for, handoff_note
        self.send = send
        self.on_cost = on_cost
        self.cost = 0.0
        self.outcome: dict[str, Any] | None = None
        self._order: list[str] = []
        self._seq: dict[str, float] = {}
        self._base = start_seq
        self._items: dict[str, _Item] = {}
        self._stored: dict[str, tuple[str, str]] = {}  # item id -> (text, status) as stored
        self._truncated: dict[str, int] = {}
        self._response_persona: dict[str, str] = {}
        self._handled_calls: set[str] = set()
        self.active_response: str | None = None
        self._pending_persona: Persona | None = None  # asked for with session.update, not confirmed yet
        self._escalating = asyncio.Lock()
        self._deferred_response = False  # a response.create to send when the active response is done
        self.idle = asyncio.Event()
        self.idle.set()
        self.errors = 0

    # -- positions ----------------------------------------------------------------------------

    def _place(self, item_id: str, previous: Any) -> float:
        if item_id in self._seq:
            return self._seq[item_id]
        if isinstance(previous, str) and previous in self._seq:
            i = self._order.index(previous)
            lo = self._seq[previous]
            seq = (lo + self._seq[self._order[i + 1]]) / 2 if i + 1 < len(self._order) else lo + 1.0
            self._order.insert(i + 1, item_id)
        else:
            seq = (self._seq[self._order[-1]] if self._order else self._base) + 1.0
            self._order.append(item_id)
        self._seq[item_id] = seq
        return seq

    # -- events -------------------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        """Record one server event (GA shape). Unknown or malformed events are ignored."""
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            await handler(self, event)

    async def _session(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            return
        if isinstance(session.get("model"), str) and session["model"]:
            self.model = session["model"][:128]
        audio = session.get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("input"), dict):
            tr = audio["input"].get("transcription")
            if isinstance(tr, dict) and isinstance(tr.get("model"), str):
                self.transcription_model = tr["model"][:128]
        persona = persona_for_instructions(session.get("instructions")) if isinstance(
            session.get("instructions"), str) else None
        if persona is not None:
            # Our own session.update confirmed, or (a direct call) the browser switched the persona.
            await self._adopt(persona)

    async def _item_added(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return
        item_id = item["id"][:128]
        self._place(item_id, event.get("previous_item_id"))
        if item_id not in self._items:
            role, kind = _role_kind(item)
            self._items[item_id] = _Item(role, kind, self.persona.id if role in ("assistant",) else None, utcnow())
        if item.get("status") == "completed":
            await self._complete(item)  # created complete (a user's text, a tool output, a note)

    async def _item_done(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            if item["id"] not in self._seq:
                self._place(item["id"][:128], event.get("previous_item_id"))
            await self._complete(item)

    async def _complete(self, item: dict[str, Any]) -> None:
        item_id = str(item["id"])[:128]
        role, kind = _role_kind(item)
        meta = self._items.get(item_id)
        if meta is None:
            meta = _Item(role, kind, self.persona.id if role == "assistant" else None, utcnow())
            self._items[item_id] = meta
            self._place(item_id, None)
        data: dict[str, Any] | None = None
        status = "completed" if item.get("status") in (None, "completed") else "incomplete"
        if kind == "message":
            text, pending = message_text(item)
            if pending and role == "user":
                meta.waiting_transcript = True
                return  # stored when its transcript arrives
        elif kind == "function_call":
            name = _s(item.get("name"), 64) or ""
            arguments = str(item.get("arguments") or "")[:MAX_TEXT]
            data = {"name": name, "arguments": arguments, "call_id": _s(item.get("call_id"), 128)}
            text = f"{name}({arguments})"
            if name == OUTCOME_TOOL and self.send is None and status == "completed":
                await self._store_outcome(arguments)  # a direct call: the browser answers the tool
        elif kind == "function_call_output":
            output = str(item.get("output") or "")[:MAX_TEXT]
            data = {"call_id": _s(item.get("call_id"), 128), "output": output}
            text = output
        else:
            text = ""
            data = {"type": _s(item.get("type"), 64)}
        await self._save(item_id, meta, text, status, data)

    async def _save(self, item_id: str, meta: _Item, text: str, status: str, data: dict[str, Any] | None) -> None:
        if item_id in self._truncated and status == "completed":
            status = "truncated"
        stored = self._stored.get(item_id)
        if stored == (text, status) or (stored is not None and stored[1] == "truncated"):
            return  # unchanged, or trimmed to what was heard already
        first = item_id not in self._stored
        await self.store.save_item(self.call_id, ItemRecord(
            item_id=item_id, seq=self._seq[item_id], role=meta.role, kind=meta.kind, persona=meta.persona,
            text=text, status=status, data=data, audio_end_ms=self._truncated.get(item_id),
            started_at=meta.started_at))
        self._stored[item_id] = (text, status)
        if first:
            self.metrics.inc("parley_transcript_items_total", role=meta.role)

    async def _transcription(self, event: dict[str, Any]) -> None:
        item_id = _s(event.get("item_id"), 128)
        if not item_id:
            return
        meta = self._items.get(item_id)
        if meta is None:
            meta = _Item("user", "message", None, utcnow())
            self._items[item_id] = meta
            self._place(item_id, None)
        failed = event.get("type", "").endswith(".failed")
        text = "" if failed else str(event.get("transcript") or "")[:MAX_TEXT]
        meta.waiting_transcript = False
        await self._save(item_id, meta, text.strip(), "failed" if failed else "completed", None)
        usage = event.get("usage")
        if not failed and isinstance(usage, dict):
            model = self.transcription_model or "unknown"
            cost = self.prices.transcription_cost(model, usage)
            await self._usage("transcription", item_id, None, model, "completed", _int(usage.get("input_tokens")),
                              _int(usage.get("output_tokens")), usage, cost)

    async def _truncated_event(self, event: dict[str, Any]) -> None:
        item_id = _s(event.get("item_id"), 128)
        if not item_id:
            return
        self._truncated[item_id] = _int(event.get("audio_end_ms"))
        if item_id in self._stored:
            text, _status = self._stored[item_id]
            await self.store.update_item(self.call_id, item_id, status="truncated",
                                         audio_end_ms=self._truncated[item_id])
            self._stored[item_id] = (text, "truncated")
        if self.send is not None:
            # The upstream trims the transcript to what was played; fetch it to record what was heard.
            await self.send({"type": "conversation.item.retrieve", "item_id": item_id})

    async def _retrieved(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return
        item_id = item["id"][:128]
        if item_id not in self._truncated or item_id not in self._stored or item.get("type") != "message":
            return
        heard, _pending = message_text(item)
        said, status = self._stored[item_id]
        if heard != said:
            await self.store.update_item(self.call_id, item_id, text=heard, data={"said": said})
            self._stored[item_id] = (heard, status)

    async def _deleted(self, event: dict[str, Any]) -> None:
        item_id = _s(event.get("item_id"), 128)
        if item_id and item_id in self._stored:
            await self.store.update_item(self.call_id, item_id, status="deleted")
            self._stored[item_id] = (self._stored[item_id][0], "deleted")

    async def _response_created(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        rid = _s(response.get("id"), 128) if isinstance(response, dict) else None
        if rid:
            self.active_response = rid
            self._response_persona[rid] = self.persona.id
            self.idle.clear()

    async def _response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            return
        rid = _s(response.get("id"), 128) or ""
        if self.active_response == rid or not rid:
            self.active_response = None
            self.idle.set()
        status = _s(response.get("status"), 32)
        outputs = [o for o in response.get("output") or [] if isinstance(o, dict)]
        for out in outputs:  # items a reporter never sent a done event for
            if isinstance(out.get("id"), str) and out["id"] not in self._stored:
                await self._complete(out)
        usage = response.get("usage")
        if rid and isinstance(usage, dict):
            cost = self.prices.response_cost(self.model, usage)
            await self._usage("response", rid, self._response_persona.get(rid, self.persona.id), self.model, status,
                              _int(usage.get("input_tokens")), _int(usage.get("output_tokens")), usage, cost)
        if self.send is not None and status == "completed":
            await self._run_tools([o for o in outputs if o.get("type") == "function_call"])
        if self.send is not None and self._deferred_response and self.active_response is None:
            self._deferred_response = False
            await self.send({"type": "response.create"})

    async def _usage(self, kind: str, ref: str, persona: str | None, model: str, status: str | None,
                     input_tokens: int, output_tokens: int, usage: dict[str, Any], cost: float) -> None:
        added = await self.store.add_usage(self.call_id, kind=kind, ref_id=ref, persona=persona, model=model[:128],
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

    async def _error(self, event: dict[str, Any]) -> None:
        self.errors += 1
        err = event.get("error")
        if isinstance(err, dict) and err.get("code") == "conversation_already_has_active_response" \
                and self.send is not None:
            self._deferred_response = True  # ours lost a race with one the upstream started: ask again after it
        if isinstance(err, dict):
            log.info("call %s: upstream error %s: %s", self.call_id, _s(err.get("code"), 64),
                     scrub(str(err.get("message") or ""))[:300])

    # -- tools and personas -------------------------------------------------------------------

    async def _store_outcome(self, arguments: str | None) -> dict[str, Any]:
        outcome = parse_outcome(arguments, self.persona)
        self.outcome = outcome
        await self.store.set_outcome(self.call_id, outcome)
        return outcome

    async def _run_tools(self, calls: list[dict[str, Any]]) -> None:
        assert self.send is not None
        todo = [c for c in calls if isinstance(c.get("call_id"), str) and c["call_id"] not in self._handled_calls]
        if not todo:
            return
        switch_to: Persona | None = None
        for call in todo:
            call_id = str(call["call_id"])[:128]
            self._handled_calls.add(call_id)
            name = _s(call.get("name"), 64) or ""
            result: dict[str, Any]
            if name == OUTCOME_TOOL:
                try:
                    outcome = await self._store_outcome(call.get("arguments"))
                    result = {"recorded": True, "monthly_savings": outcome["monthly_savings"]}
                except ValueError as exc:
                    result = {"recorded": False, "error": str(exc)}
            elif name and name == self.persona.handoff_tool and self.persona.handoff_persona is not None:
                switch_to = self.persona.handoff_persona
                result = {"transferred": True, "to": switch_to.name, "role": switch_to.role}
            else:
                result = {"error": f"unknown function {name!r}"}
            self.metrics.inc("parley_tool_calls_total", name=name if name in (OUTCOME_TOOL, "transfer_to_supervisor") else "other")
            await self.send({"type": "conversation.item.create",
                             "item": {"type": "function_call_output", "call_id": call_id,
                                      "output": json.dumps(result)}})
        if switch_to is not None:
            await self.switch_persona(switch_to)
        await self.request_response()

    async def request_response(self) -> None:
        """response.create now, or once the response in progress is done."""
        assert self.send is not None
        if self.active_response is not None:
            self._deferred_response = True
        else:
            await self.send({"type": "response.create"})

    async def switch_persona(self, persona: Persona, *, update: bool = True) -> None:
        """Hand the call to `persona`.

        With `update` (a server-held call) this sends the `session.update`; the record follows when the
        upstream confirms it with `session.updated`, in event order, so what the old persona was still
        saying is not put in the new one's mouth. Without, the record switches now."""
        if not update or self.send is None:
            await self._adopt(persona)
            return
        current = self._pending_persona or self.persona
        if persona.id == current.id:
            return
        self._pending_persona = persona
        # Two updates: OpenAI refuses a voice change once the session has spoken, and a refused
        # update changes nothing, so the voice goes alone after instructions and tools.
        session = self.session_for(persona)
        output = session.get("audio", {}).get("output") or {}
        voice = output.pop("voice", None)
        if not output:
            session.get("audio", {}).pop("output", None)
        await self.send({"type": "session.update", "session": session})
        if voice is not None:
            await self.send({"type": "session.update",
                             "session": {"type": "realtime", "audio": {"output": {"voice": voice}}}})

    async def _adopt(self, persona: Persona) -> None:
        if self._pending_persona is not None and self._pending_persona.id == persona.id:
            self._pending_persona = None
        if persona.id == self.persona.id:
            return
        self.persona = persona
        await self.store.add_persona(self.call_id, persona.id, persona.name)

    async def escalate(self, *, wait: float = 5.0) -> Persona:
        """Hand the call to the current persona's supervisor now (a server-held call only)."""
        if self.send is None:
            raise ApiError(409, "Only calls the server holds (POST /api/calls) can be escalated by the server; "
                                "a browser-direct call switches persona itself.", "not_server_call")
        async with self._escalating:  # two requests at once hand over once
            return await self._escalate(wait)

    async def _escalate(self, wait: float) -> Persona:
        assert self.send is not None
        old = self._pending_persona or self.persona
        target = old.handoff_persona
        if target is None:
            raise ApiError(409, f"{old.name} has nobody to hand the call to.", "no_supervisor")
        # Stop whatever the old persona is saying. With no response active a cancel only earns an
        # error event, which the upstream also shows the caller's page; one we have not heard of
        # yet ends by itself, and our response.create then waits for it (see _error).
        if self.active_response is not None:
            await self.send({"type": "response.cancel"})
        await self.send({"type": "output_audio_buffer.clear"})
        if self.active_response is not None:
            try:
                await asyncio.wait_for(self.idle.wait(), wait)
            except TimeoutError:
                log.info("call %s: response still active after cancel; escalating anyway", self.call_id)
        await self.switch_persona(target)
        await self.send({"type": "conversation.item.create",
                         "item": {"type": "message", "role": "system",
                                  "content": [{"type": "input_text", "text": self.handoff_note(old, target)}]}})
        await self.request_response()
        return target


def _role_kind(item: dict[str, Any]) -> tuple[str, str]:
    kind = item.get("type")
    if kind == "function_call":
        return "assistant", "function_call"
    if kind == "function_call_output":
        return "tool", "function_call_output"
    if kind == "message":
        role = item.get("role")
        return (role if role in ("user", "assistant", "system") else "system"), "message"
    return "system", (str(kind)[:32] if isinstance(kind, str) else "unknown")


_HANDLERS: dict[str, Callable[[Recorder, dict[str, Any]], Awaitable[None]]] = {
    "session.created": Recorder._session,
    "session.updated": Recorder._session,
    "conversation.item.added": Recorder._item_added,
    "conversation.item.created": Recorder._item_added,
    "conversation.item.done": Recorder._item_done,
    "response.output_item.done": Recorder._item_done,
    "conversation.item.input_audio_transcription.completed": Recorder._transcription,
    "conversation.item.input_audio_transcription.failed": Recorder._transcription,
    "conversation.item.truncated": Recorder._truncated_event,
    "conversation.item.deleted": Recorder._deleted,
    "conversation.item.retrieved": Recorder._retrieved,
    "response.created": Recorder._response_created,
    "response.done": Recorder._response_done,
    "error": Recorder._error,
}
