"""Phone calls through OpenAI's SIP trunking: what the server does with a `realtime.call.incoming`.

The caller is known by their number (the From header's user part): that is the identity their
limits and caps count against and their calls are recorded under (`tel:+15550100`; give that user
a token to read their history). Within limits the call is accepted upstream with the phone
persona's session, held and recorded over its sideband like `/api/calls`, and the persona greets
first; otherwise it is rejected with a SIP status.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from parley.http.errors import ApiError

from .auth import Principal
from .personas import find_persona
from .state import ServerState
from .upstream import UpstreamError

log = logging.getLogger(__name__)

# The user part of a sip:/sips:/tel: URI in a From header: `"Ann" <sip:+1 555 0100@host>;tag=x`.
_URI = re.compile(r"(?:sips?|tel):([^@;>\s]{1,64})(?:@([^;>\s]{1,255}))?", re.IGNORECASE)
_NUMBER = re.compile(r"^\+?[0-9][0-9().\-]{2,31}$")
# What a refused call hears: over a limit or a cap the line is busy; a server fault is a 480.
BUSY, UNAVAILABLE = 486, 480


@dataclass(frozen=True)
class Caller:
    address: str  # the number ("+15550100"), else the URI's user@host
    user_id: str  # "tel:+15550100" or "sip:alice@example.org"


def caller_of(sip_headers: list[dict[str, Any]]) -> Caller | None:
    """Who calls, from the INVITE's From header; None without a usable one."""
    value = next((h.get("value") for h in sip_headers
                  if isinstance(h, dict) and str(h.get("name", "")).lower() in ("from", "f")), None)
    match = _URI.search(value) if isinstance(value, str) else None
    if match is None:
        return None
    user, host = match.group(1), match.group(2)
    if _NUMBER.match(user):
        number = ("+" if user.startswith("+") else "") + re.sub(r"\D", "", user)
        return Caller(number, f"tel:{number}")
    address = f"{user}@{host}" if host else user
    return Caller(address, f"sip:{address}"[:128])


async def incoming_call(state: ServerState, upstream_id: str, sip_headers: list[dict[str, Any]], *,
                        self_url: str | None) -> dict[str, Any]:
    """Accept (and record) or reject one incoming SIP call; what was done, for the webhook's answer."""
    caller = caller_of(sip_headers)
    if caller is None:
        return await _reject(state, upstream_id, 403, "no caller number in the From header")
    principal = Principal(user_id=caller.user_id, limit_key=caller.user_id, method="phone")
    wait = await state.limiter.acquire(principal.limit_key)
    if wait is not None:
        state.metrics.inc("parley_rate_limited_total", reason="rate")
        return await _reject(state, upstream_id, BUSY, "rate limited")
    persona = find_persona(state.settings.phone_persona)
    try:
        live = await state.calls.start_phone_call(principal, persona, upstream_id, self_url=self_url,
                                                  caller=caller.address)
    except UpstreamError as exc:
        return await _reject(state, upstream_id, UNAVAILABLE, exc.message)
    except ApiError as exc:  # the concurrent-call cap, the daily cost cap
        return await _reject(state, upstream_id, BUSY if exc.status == 429 else UNAVAILABLE,
                             exc.code or exc.message)
    live.caller = caller.address
    log.info("phone call %s from %s accepted (upstream %s)", live.id, _masked(caller.address), upstream_id[:64])
    return {"status": "accepted", "call_id": live.id}


async def _reject(state: ServerState, upstream_id: str, status: int, why: str) -> dict[str, Any]:
    log.info("phone call %s rejected with %d: %s", upstream_id[:64], status, why[:200])
    state.metrics.inc("parley_phone_rejected_total", status=str(status))
    try:
        await state.upstream.reject_call(upstream_id, status)
    except UpstreamError as exc:
        log.info("rejecting %s upstream failed: %s", upstream_id[:64], exc.message)
    return {"status": "rejected", "sip_status": status, "reason": why[:200]}


def _masked(number: str) -> str:
    """Enough of a number for a log line to be useful, not enough to be a phone book."""
    return number[:3] + "…" + number[-2:] if len(number) > 6 else "…"
