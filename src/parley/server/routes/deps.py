"""What the server's routes depend on: its state, the caller (rate limited or not), the call."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi import Path as PathParam

from parley.http.errors import ApiError

from ..auth import Principal
from ..db import Call
from ..limits import retry_after
from ..personas import find_persona
from ..state import ServerState

CALL_ID = r"^[A-Za-z0-9_-]{1,64}$"

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input (malformed JSON, invalid SDP, unknown persona)"},
    401: {"description": "Not signed in"},
    404: {"description": "No such call"},
    409: {"description": "The call is not in a state for this"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid fields"},
    429: {"description": "Rate limit, concurrent-call cap or daily cost cap (see Retry-After)"},
    502: {"description": "The upstream failed"},
    504: {"description": "The upstream timed out"},
}


async def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]


async def who(request: Request, state: State) -> Principal:
    return await state.auth.authenticate(request)


Who = Annotated[Principal, Depends(who)]


async def limited(state: State, principal: Who) -> Principal:
    wait = await state.limiter.acquire(principal.limit_key)
    if wait is not None:
        state.metrics.inc("parley_rate_limited_total", reason="rate")
        raise ApiError(429, f"Too many requests; try again in {retry_after(wait)} s.", "rate_limited",
                       headers={"Retry-After": retry_after(wait)})
    return principal


Limited = Annotated[Principal, Depends(limited)]
CallId = Annotated[str, PathParam(pattern=CALL_ID, max_length=64)]


async def owned_call(state: ServerState, call_id: str, principal: Principal) -> Call:
    call = await state.store.get_call(call_id)
    if call is None or call.user_id != principal.user_id:
        raise ApiError(404, "No such call.", "call_not_found")
    return call


@functools.cache
def persona_card(persona_id: str) -> dict[str, Any]:
    return find_persona(persona_id).card()
