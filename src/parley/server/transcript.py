"""A stored call as JSON (the API's call detail) and as Markdown."""

from __future__ import annotations

from typing import Any

from parley.apps.copilot import THEM_LABEL
from parley.apps.scenarios import UnknownPersonaError, get_persona
from parley.telephony.numbers import mask_number

from .copilot import PERSONAS as COPILOT_PERSONAS
from .db import Call, TranscriptItem, UsageRecord, as_utc, utcnow
from .endings import Caps, end_text, outcome_text


def _persona_name(persona_id: str | None) -> str | None:
    if not persona_id:
        return None
    if persona_id in COPILOT_PERSONAS:
        return COPILOT_PERSONAS[persona_id].name
    try:
        return get_persona(persona_id).name
    except UnknownPersonaError:
        return persona_id


def _iso(value: Any) -> str | None:
    v = as_utc(value)
    return v.isoformat() if v is not None else None


def call_summary(call: Call, caps: Caps) -> dict[str, Any]:
    """A call for the API: machine codes (`status`, `end_reason`, `outcome`), each with its sentence
    for people beside it (`end_reason_text`, `outcome_text`); `caps` are the limits those name."""
    created = as_utc(call.created_at)
    ended = as_utc(call.ended_at)
    end = ended or (utcnow() if call.status == "active" else created)
    duration = (end - created).total_seconds() if created and end else None
    return {
        "id": call.id,
        "kind": call.kind,
        "channel": call.channel or "web",
        "caller": mask_number(call.caller),
        "status": call.status,
        "end_reason": call.end_reason,
        "end_reason_text": end_text(call.status, call.end_reason, caps),
        "persona": call.persona,
        "personas": call.personas or [],
        "model": call.model,
        "created_at": _iso(call.created_at),
        "ended_at": _iso(call.ended_at),
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "usage": {"input_tokens": call.input_tokens, "output_tokens": call.output_tokens},
        "cost_usd": round(call.cost_usd, 6),
        "outcome": call.outcome,
        "outcome_text": outcome_text(call.outcome),
    }


def item_json(item: TranscriptItem) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "role": item.role,
        "kind": item.kind,
        "persona": item.persona,
        "speaker": speaker(item),
        "text": (item.text or "").removeprefix(THEM_LABEL).lstrip() if item.role == "user" else item.text,
        "status": item.status,
        "data": item.data,
        "audio_end_ms": item.audio_end_ms,
        "started_at": _iso(item.started_at),
        "completed_at": _iso(item.completed_at),
    }


def speaker(item: TranscriptItem) -> str:
    if item.role == "user":
        # The copilot's recording carries the other party's lines, labelled.
        return "Them" if (item.text or "").startswith(THEM_LABEL) else "You"
    if item.kind == "main_answer":
        return "Main answer"
    if item.role == "assistant":
        return _persona_name(item.persona) or "Agent"
    if item.role == "tool":
        return "Tool"
    return "Note"


def usage_json(rec: UsageRecord) -> dict[str, Any]:
    return {"kind": rec.kind, "ref_id": rec.ref_id, "persona": rec.persona, "model": rec.model,
            "status": rec.status, "input_tokens": rec.input_tokens, "output_tokens": rec.output_tokens,
            "cost_usd": round(rec.cost_usd, 6), "usage": rec.usage, "created_at": _iso(rec.created_at)}


def call_detail(call: Call, items: list[TranscriptItem], usage: list[UsageRecord], caps: Caps) -> dict[str, Any]:
    return {**call_summary(call, caps), "transcript": [item_json(i) for i in items if i.status != "deleted"],
            "responses": [usage_json(u) for u in usage]}


def _money(v: Any) -> str:
    return f"${float(v):,.2f}" if isinstance(v, int | float) else "?"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def markdown(call: Call, items: list[TranscriptItem], caps: Caps) -> str:
    s = call_summary(call, caps)
    names = " → ".join(p.get("name", p.get("id", "?")) for p in s["personas"]) or _persona_name(call.persona)
    out = [f"# Call {call.id}", "",
           f"- Agent: {names}",
           f"- Started: {s['created_at']}" + (f", by phone from {s['caller']}" if s["channel"] == "phone" else ""),
           f"- Duration: {s['duration_seconds']:.0f} s" if s["duration_seconds"] is not None else "- Duration: ?",
           f"- Status: {s['end_reason_text']}" + (f" (`{call.end_reason}`)" if call.end_reason else ""),
           f"- Usage: {call.input_tokens} input / {call.output_tokens} output tokens, cost {_money(call.cost_usd)}"]
    if call.outcome:
        o = call.outcome
        line = (f"- Outcome: {_money(o.get('old_monthly_price'))} → {_money(o.get('new_monthly_price'))} a month "
                f"(saves {_money(o.get('monthly_savings'))} a month")
        if o.get("term_months"):
            line += f", {_money(o.get('total_savings'))} over {o['term_months']} months"
        out.append(line + f"), accepted from {o.get('accepted_by')}")
    out += ["", "## Transcript", ""]
    for item in items:
        if item.status == "deleted":
            continue
        text = _one_line(item.text)
        if item.kind == "function_call":
            data = item.data or {}
            out.append(f"> *{speaker(item)} called `{data.get('name')}` {_one_line(str(data.get('arguments', '')))}*")
        elif item.kind == "function_call_output":
            out.append(f"> *result: {text}*")
        elif item.role == "system":
            out.append(f"> *note: {text}*")
        else:
            flag = {"failed": " *(not understood)*", "truncated": " *(interrupted)*",
                    "incomplete": " *(cut off)*"}.get(item.status, "")
            out.append(f"**{speaker(item)}:** {text}{flag}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
