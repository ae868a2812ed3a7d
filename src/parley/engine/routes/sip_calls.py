"""SIP calls, as OpenAI serves them for SIP trunks: `POST /v1/realtime/calls/{call_id}/accept`
(the session config), `/reject` (a SIP status), `/refer` (a transfer target). `/hangup` is the
WebRTC route's (engine.routes.calls), which ends either kind. The SIP side is `engine.sip`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from parley.engine.engine import Engine
from parley.engine.sip.listener import CallStateError, SipListener
from parley.http.body import JsonBodyRoute, read_json_object
from parley.http.errors import ApiError

from .deps import EngineDep, StandardKey, session_config
from .schemas import ERRORS, GA_SESSION

router = APIRouter(route_class=JsonBodyRoute, tags=["sip calls"])

MAX_TARGET = 512


def _sip(engine: Engine) -> SipListener:
    if engine.sip is None:
        raise ApiError(404, "This engine takes no SIP calls (set PARLEY_ENGINE_SIP_ADDR).", "call_id_not_found",
                       param="call_id")
    return engine.sip


def _state_error(exc: CallStateError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.code, param="call_id" if exc.status == 404 else None)


@router.post("/v1/realtime/calls/{call_id}/accept", responses=ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": GA_SESSION}}}})
async def accept(call_id: str, request: Request, engine: EngineDep, _key: StandardKey) -> dict[str, Any]:
    sip = _sip(engine)
    config = session_config(await read_json_object(request))
    try:
        await sip.accept(call_id, config)
    except CallStateError as exc:
        raise _state_error(exc) from None
    return {}


@router.post("/v1/realtime/calls/{call_id}/reject", responses=ERRORS)
async def reject(call_id: str, request: Request, engine: EngineDep, _key: StandardKey) -> dict[str, Any]:
    sip = _sip(engine)
    body = await read_json_object(request) if await request.body() else {}
    status = body.get("status_code", 603)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 699:
        raise ApiError(400, "'status_code' must be a SIP final status from 400 to 699.", "invalid_value",
                       param="status_code")
    try:
        sip.reject(call_id, status)
    except CallStateError as exc:
        raise _state_error(exc) from None
    return {}


@router.post("/v1/realtime/calls/{call_id}/refer", responses=ERRORS)
async def refer(call_id: str, request: Request, engine: EngineDep, _key: StandardKey) -> dict[str, Any]:
    sip = _sip(engine)
    target = (await read_json_object(request)).get("target_uri")
    if not isinstance(target, str) or not target.startswith(("tel:", "sip:", "sips:")) \
            or len(target) > MAX_TARGET or any(c in target for c in "\r\n<> "):
        raise ApiError(400, "'target_uri' must be a tel: or sip: URI.", "invalid_value", param="target_uri")
    try:
        sip.refer(call_id, target)
    except CallStateError as exc:
        raise _state_error(exc) from None
    return {}
