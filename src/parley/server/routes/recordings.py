"""A call's recording (microphone and agent, mixed in the browser): `POST` and `GET
/api/calls/{call_id}/audio`. The one large body the server takes (PARLEY_MAX_AUDIO_BYTES)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from parley.http.body import JsonBodyRoute
from parley.http.errors import ApiError
from parley.http.sdp import media_type

from ..settings import ServerSettings
from .deps import ERRORS, CallId, State, Who, owned_call

AUDIO_UPLOAD = re.compile(r"^/api/calls/[^/]+/audio$")
AUDIO_TYPES = {"audio/webm": "webm", "audio/ogg": "ogg", "audio/wav": "wav", "audio/mp4": "m4a"}

router = APIRouter(route_class=JsonBodyRoute, tags=["calls"])


def recording(settings: ServerSettings, call_id: str) -> Path | None:
    """The file of a call's recording, if it has one."""
    return next((p for p in (settings.data_dir / "audio").glob(f"{call_id}.*") if p.is_file()), None)


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
    folder = state.settings.data_dir / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    old = recording(state.settings, call_id)
    if old is not None:
        old.unlink()
    path = folder / f"{call_id}.{AUDIO_TYPES[kind]}"
    await asyncio.to_thread(path.write_bytes, data)
    return {"call_id": call_id, "bytes": len(data), "type": kind}


@router.get("/api/calls/{call_id}/audio", responses=ERRORS, response_class=FileResponse)
async def download_audio(call_id: CallId, state: State, principal: Who) -> FileResponse:
    await owned_call(state, call_id, principal)
    path = recording(state.settings, call_id)
    if path is None:
        raise ApiError(404, "This call has no recording.", "no_recording")
    kind = next(k for k, ext in AUDIO_TYPES.items() if path.suffix == f".{ext}")
    return FileResponse(path, media_type=kind, filename=f"{call_id}{path.suffix}")
