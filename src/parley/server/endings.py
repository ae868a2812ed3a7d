"""What a call's end reason and outcome mean to a person ("You hung up", "Accepted $94.99/month from Marco").

The machine codes stay in the API's JSON (`end_reason`, `outcome`); these sentences go next to them
for pages and Markdown. Every reason the server records has its sentence here: `hangup`, the caps
(`max_duration`, `max_cost`, `daily_cost_cap`), `idle`, `server_shutdown`, `server_restart`, the
sideband's (`sideband_failed`, `sideband_lost`, `sideband_error`), a phone call's (`caller_hangup`,
`bad_input`, `server_error`) and `upstream_closed[:<why>]`,
where `<why>` is the upstream's close reason (the local engine's are listed in `_UPSTREAM`).
"""

from __future__ import annotations

from typing import Any, Protocol


class Caps(Protocol):
    """The limits a sentence names (ServerSettings has them)."""

    max_call_seconds: float
    max_call_cost_usd: float
    daily_cost_cap_usd: float


# Why the upstream closed the call (the engine's close reasons; OpenAI sends its own).
_UPSTREAM = {
    "peer_closed": "You hung up",  # the page closed its connection: End call, or the tab closed
    "hangup": "The call was hung up",
    "peer_failed": "Connection lost",
    "client_disconnected": "Connection lost",
    "peer_never_connected": "The call never connected",
    "session_expired": "Ended at the realtime session's time limit",
    "engine_shutdown": "The voice engine shut down",
    "bad_offer": "The call could not start",
}

_FIXED = {
    "hangup": "You hung up",
    "idle": "Connection lost (the page stopped reporting)",
    "server_shutdown": "The server shut down",
    "server_restart": "The server restarted during the call",
    "sideband_failed": "The call could not start",
    "sideband_lost": "Connection lost",
    "sideband_error": "Ended by a server error",
    "upstream_closed": "The agent's side ended the call",
    # phone calls (server.twilio_bridge)
    "caller_hangup": "The caller hung up",
    "bad_input": "Ended: the phone line sent too many malformed frames",
    "server_error": "Ended by a server error",
}


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}-minute"
    return f"{seconds:g}-second"


def end_text(status: str, reason: str | None, caps: Caps) -> str:
    """A call's end as a person says it; the status when there is no reason."""
    if status == "active":
        return "In progress"
    if not reason:
        return {"failed": "Failed", "ended": "Ended"}.get(status, status.capitalize())
    if reason == "max_duration":
        return f"Ended at the {_duration(caps.max_call_seconds)} cap"
    if reason == "max_cost":
        return f"Ended at the ${caps.max_call_cost_usd:.2f} cost cap for a call"
    if reason == "daily_cost_cap":
        return f"Ended at the ${caps.daily_cost_cap_usd:.2f} daily cost cap"
    if reason in _FIXED:
        return _FIXED[reason]
    kind, _, why = reason.partition(":")
    if kind == "upstream_closed":
        return _UPSTREAM.get(why, f"The agent's side ended the call ({why})")
    return f"Ended ({reason})"


def _money(value: Any) -> str | None:
    return f"${float(value):,.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else None


def outcome_text(outcome: dict[str, Any] | None) -> str | None:
    """"Accepted $94.99/month from Marco", or None when no offer was accepted."""
    if not isinstance(outcome, dict):
        return None
    price = _money(outcome.get("new_monthly_price"))
    if price is None:
        return None
    who = outcome.get("accepted_by")
    return f"Accepted {price}/month" + (f" from {who}" if isinstance(who, str) and who else "")
