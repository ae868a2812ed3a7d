"""Browser-direct calls: `GET /api/personas` (who can be called) and `POST /api/session` (an
ephemeral key for a persona; the browser posts its offer upstream with it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from parley.apps.scenarios import list_personas
from parley.http.body import JsonBodyRoute

from ..personas import DEFAULT_PERSONA, find_persona, persona_session
from .deps import ERRORS, Limited, State, persona_card

router = APIRouter(route_class=JsonBodyRoute, tags=["calls"])


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    persona: str = Field(DEFAULT_PERSONA, min_length=1, max_length=128, examples=["negotiator/sarah"])


class SessionResponse(BaseModel):
    value: str = Field(description="The ephemeral key (ek_...) for the browser's SDP POST.")
    expires_at: int
    model: str
    calls_url: str = Field(description="Where the browser posts its SDP offer with the key.")
    call_id: str = Field(description="This call's id on the Parley server, for /api/calls/{id}/events.")
    events_url: str
    persona: dict[str, Any]


@router.get("/api/personas")
async def personas() -> list[dict[str, Any]]:
    return [p.card() for p in list_personas()]


@router.post("/api/session", response_model=SessionResponse, responses=ERRORS)
async def create_session(request: Request, state: State, principal: Limited,
                         body: Annotated[SessionRequest | None, Body()] = None) -> JSONResponse:
    settings, calls = state.settings, state.calls
    persona = find_persona((body or SessionRequest()).persona)
    await calls.check_daily_cap(principal.user_id)
    call_id = await calls.register_direct(principal, persona, settings.model, settings.ephemeral_key_ttl_seconds)
    try:
        secret = await state.upstream.mint(persona_session(persona, settings), settings.ephemeral_key_ttl_seconds)
    except BaseException:
        await calls.unregister_direct(call_id)
        raise
    state.metrics.inc("parley_sessions_total")
    session = secret.get("session")
    if not isinstance(session, dict):
        session = {}
    # A JSONResponse straight away: FastAPI would validate and serialize the model field by field.
    return JSONResponse({"value": str(secret["value"]), "expires_at": int(secret.get("expires_at") or 0),
                         "model": str(session.get("model") or settings.model),
                         "calls_url": state.upstream.calls_url(str(request.base_url), str(secret["value"])),
                         "call_id": call_id, "events_url": f"/api/calls/{call_id}/events",
                         "persona": persona_card(persona.id)})
