"""WebRTC calls: `POST /v1/realtime/calls` (SDP offer in, SDP answer out, `Location` the call)
and `POST /v1/realtime/calls/{call_id}/hangup`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response

from parley.http.body import JsonBodyRoute, parse_json
from parley.http.errors import ApiError
from parley.http.sdp import MAX_OFFER_BYTES, check_offer, read_offer
from parley.protocol.session import RealtimeSessionConfig, SessionConfig

from .deps import AnyKey, EngineDep, session_config
from .schemas import ERRORS, GA_SESSION

log = logging.getLogger(__name__)

router = APIRouter(route_class=JsonBodyRoute, tags=["calls"])

CALLS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/sdp": {"schema": {"type": "string", "description": "The SDP offer (with an ephemeral "
                                                                            "key, whose session the call takes)."}},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["sdp"],
                           "properties": {"sdp": {"type": "string", "description": "The SDP offer."},
                                          "session": GA_SESSION}},
                "encoding": {"sdp": {"contentType": "application/sdp"}, "session": {"contentType": "application/json"}},
            },
        },
    },
}


@router.post("/v1/realtime/calls", status_code=201, response_class=Response, responses=ERRORS,
             openapi_extra=CALLS_BODY)
async def create_call(request: Request, engine: EngineDep, secret: AnyKey) -> Response:
    engine.check_accepting()
    offer = await read_offer(request, parts=("session",), max_bytes=MAX_OFFER_BYTES)
    config: SessionConfig
    if "session" in offer.parts:
        config = session_config(parse_json(offer.parts["session"], param="session", what="the 'session' part"))
    elif secret is not None:
        config = secret.config
    else:
        config = RealtimeSessionConfig()
    sdp = check_offer(offer.sdp, MAX_OFFER_BYTES)
    try:
        call, answer = await engine.start_call(config, sdp)
    except Exception as exc:  # aiortc rejects offers it cannot answer
        log.info("offer refused: %s", exc)
        raise ApiError(400, f"Could not answer the SDP offer: {exc}", "invalid_offer", param="sdp") from None
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call.id}"})


@router.post("/v1/realtime/calls/{call_id}/hangup", responses=ERRORS)
async def hangup(call_id: str, engine: EngineDep, _secret: AnyKey) -> dict[str, Any]:
    call = engine.calls.get(call_id)
    if call is None and engine.sip is not None and call_id in engine.sip.pending:
        engine.sip.reject(call_id, 603)  # a SIP call still ringing: hung up before it was answered
        return {}
    if call is None:
        raise ApiError(404, f"No call found with id '{call_id[:100]}'.", "call_id_not_found", param="call_id")
    await call.close("hangup")
    return {}
