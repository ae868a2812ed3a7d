"""Calls: `POST /api/calls` (a server-held call: SDP offer in, answer out), the caller's calls and
transcripts, escalation, hangup, and the event reports of browser-direct calls."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parley.apps.scenarios import Persona
from parley.http.body import JsonBodyRoute, read_json_object
from parley.http.errors import ApiError
from parley.http.sdp import check_offer, media_type, read_offer

from ..limits import retry_after
from ..personas import DEFAULT_PERSONA, find_persona
from ..settings import ServerSettings
from ..transcript import call_detail, call_summary, markdown
from .deps import ERRORS, CallId, Limited, State, Who, owned_call, persona_card

router = APIRouter(route_class=JsonBodyRoute, tags=["calls"])


class CallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sdp: str = Field(min_length=1, description="The browser's SDP offer.")
    persona: str = Field(DEFAULT_PERSONA, min_length=1, max_length=128)


class EventsReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(description="Server events as the data channel delivered them.")
    upstream_call_id: str | None = Field(None, pattern=r"^rtc_[A-Za-z0-9_-]{1,100}$",
                                         description="The upstream call id (Location of the SDP answer).")


CALLS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/sdp": {"schema": {"type": "string"}},
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["sdp"],
                "properties": {"sdp": {"type": "string"}, "persona": {"type": "string"}}}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["sdp"],
                "properties": {"sdp": {"type": "string"}, "persona": {"type": "string"}}}},
        },
    },
    "parameters": [{"name": "persona", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "The persona, with an application/sdp body."}],
}


async def _read_call_request(request: Request, settings: ServerSettings) -> tuple[str, str, bool]:
    """(SDP offer, persona id, whether to answer in JSON) from any of the three body types."""
    accept = request.headers.get("accept") or ""
    if media_type(request) == "application/json":
        try:
            req = CallRequest.model_validate(await read_json_object(request))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return req.sdp, req.persona, "application/sdp" not in accept
    offer = await read_offer(request, parts=("persona",), max_bytes=settings.max_sdp_bytes,
                             also_accepted=", or application/json {\"sdp\", \"persona\"} (the server builds the "
                                           "session from the persona)")
    persona = offer.parts.get("persona") or request.query_params.get("persona") or DEFAULT_PERSONA
    return offer.sdp, persona, "application/json" in accept


@router.post("/api/calls", status_code=201, responses=ERRORS, openapi_extra=CALLS_BODY, response_class=Response)
async def create_call(request: Request, state: State, principal: Limited) -> Response:
    settings = state.settings
    sdp, persona_id, want_json = await _read_call_request(request, settings)
    persona = find_persona(persona_id[:128])
    offer = check_offer(sdp, settings.max_sdp_bytes)
    call_id, answer = await state.calls.start_call(principal, persona, offer, self_url=_self_url(request, settings))
    headers = {"Location": f"/api/calls/{call_id}", "X-Parley-Call-Id": call_id}
    if want_json:
        return JSONResponse({"call_id": call_id, "type": "answer", "sdp": answer, "persona": persona_card(persona.id),
                             "model": settings.model}, status_code=201, headers=headers)
    return Response(answer, status_code=201, media_type="application/sdp", headers=headers)


@router.get("/api/calls", responses=ERRORS)
async def list_calls(state: State, principal: Who, limit: Annotated[int, Query(ge=1, le=100)] = 50,
                     offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[dict[str, Any]]:
    return [call_summary(c, state.settings) for c in await state.store.list_calls(principal.user_id, limit=limit, offset=offset)]


@router.get("/api/calls/{call_id}", responses=ERRORS)
async def get_call(call_id: CallId, state: State, principal: Who) -> dict[str, Any]:
    call = await owned_call(state, call_id, principal)
    detail = call_detail(call, await state.store.items(call_id), await state.store.usage(call_id), state.settings)
    return {**detail, "has_audio": await state.recordings.find(call_id) is not None}


@router.get("/api/calls/{call_id}/transcript", responses=ERRORS, response_class=Response)
async def transcript(request: Request, call_id: CallId, state: State, principal: Who,
                     format: Annotated[Literal["md", "markdown", "json"] | None, Query()] = None) -> Response:
    call = await owned_call(state, call_id, principal)
    items = await state.store.items(call_id)
    if format is None:
        accept = request.headers.get("accept") or ""
        format = "md" if ("text/markdown" in accept or "text/plain" in accept) else "json"
    if format in ("md", "markdown"):
        return Response(markdown(call, items, state.settings), media_type="text/markdown; charset=utf-8",
                        headers={"Content-Disposition": f'inline; filename="{call_id}.md"'})
    return JSONResponse(call_detail(call, items, await state.store.usage(call_id), state.settings))


@router.post("/api/calls/{call_id}/escalate", responses=ERRORS)
async def escalate(call_id: CallId, state: State, principal: Who) -> dict[str, Any]:
    await owned_call(state, call_id, principal)
    persona: Persona = await state.calls.escalate(call_id)
    return {"call_id": call_id, "persona": {"id": persona.id, "name": persona.name, "role": persona.role}}


@router.post("/api/calls/{call_id}/hangup", responses=ERRORS)
async def hangup(call_id: CallId, state: State, principal: Who) -> dict[str, Any]:
    status, reason = await state.calls.hangup(principal, call_id)
    return {"call_id": call_id, "status": status, "end_reason": reason}


@router.post("/api/calls/{call_id}/transfer", responses=ERRORS)
async def transfer(call_id: CallId, state: State, principal: Who) -> dict[str, Any]:
    """"Transfer me to a human": a phone call is referred (SIP REFER) to PARLEY_TRANSFER_TO."""
    await owned_call(state, call_id, principal)
    target = state.settings.transfer_to
    live = state.calls.live.get(call_id)
    if live is None or live.caller is None:
        raise ApiError(409, "Only a phone call in progress can be transferred.", "not_phone_call")
    if not target:
        raise ApiError(409, "There is nobody to transfer to (set PARLEY_TRANSFER_TO).", "no_transfer_target")
    await state.upstream.refer_call(live.upstream_call_id, target)
    return {"call_id": call_id, "status": "transferring", "target_uri": target}


@router.post("/api/calls/{call_id}/events", responses=ERRORS)
async def report_events(call_id: CallId, state: State, principal: Who, body: EventsReport) -> dict[str, Any]:
    wait = await state.events_limiter.acquire(principal.limit_key)
    if wait is not None:
        state.metrics.inc("parley_rate_limited_total", reason="events")
        raise ApiError(429, "Too many event reports; batch them.", "rate_limited",
                       headers={"Retry-After": retry_after(wait)})
    if len(body.events) > state.settings.max_events_per_report:
        raise ApiError(413, f"At most {state.settings.max_events_per_report} events per report.", "too_many_events")
    return await state.calls.report(principal, call_id, body.events, body.upstream_call_id)


def _self_url(request: Request, settings: ServerSettings) -> str | None:
    """The server's own base URL (the local engine's sideband WebSocket dials it)."""
    if settings.self_url:
        return settings.self_url
    server = request.scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if request.scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}:{port}"
