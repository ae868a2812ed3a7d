"""A call's recording (microphone and agent, mixed in the browser): `POST` and `GET
/api/calls/{call_id}/audio`. The one large body the server takes (PARLEY_MAX_AUDIO_BYTES)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from parley.http.body import JsonBodyRoute
from parley.http.errors import ApiError
from parley.http.sdp import media_type

from ..storage import AUDIO_TYPES
from .deps import ERRORS, CallId, State, Who, owned_call

AUDIO_UPLOAD = re.compile(r"^/api/calls/[^/]+/audio$")

router = APIRouter(route_class=JsonBodyRoute, tags=["calls"])


@router.post("/api/calls/{call_id}/audio", responses=ERRORS)
async def upload_audio(request: Request, call_id: CallId, state: State, principal: Who) -> dict[str, Any]:
    """The call's recording (microphone and agent, mixed in the browser)."""
    await owned_call(state, call_id, principal)
    kind = media_type(request)
    if kind not in AUDIO_TYPES:
        raise ApiError(415, f"Send the recording as one of {', '.join(AUDIO_TYPES)}.", "unsupported_media_type")
    data = await request.body()
    if len(data) < 64:
        raise ApiError(400, "The recording is empty.", "empty_recording")
    await state.recordings.save(call_id, kind, data)
    return {"call_id": call_id, "bytes": len(data), "type": kind}


@router.get("/api/calls/{call_id}/audio", responses=ERRORS, response_class=FileResponse)
async def download_audio(call_id: CallId, state: State, principal: Who) -> FileResponse:
    await owned_call(state, call_id, principal)
    found = await state.recordings.find(call_id)
    if found is None:
        raise ApiError(404, "This call has no recording.", "no_recording")
    return FileResponse(found.path, media_type=found.media_type, filename=f"{call_id}{found.path.suffix}")
