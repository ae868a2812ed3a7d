"""The copilot's considered answers: `GET /api/copilot` (which answerer) and `POST
/api/copilot/answer` (server-sent events, from the call's transcript so far)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from parley.http.body import JsonBodyRoute
from parley.http.errors import ApiError

from ..copilot import PERSONAS, stream_answer
from .deps import ERRORS, State, Who, owned_call

router = APIRouter(route_class=JsonBodyRoute, tags=["copilot"])


class CopilotAnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mic_call_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    speaker_call_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    question: str | None = Field(None, max_length=4000, description="Their latest line, as the page heard it.")


@router.get("/api/copilot")
async def copilot_info(state: State, principal: Who) -> dict[str, Any]:  # the dependency sets the visitor's cookie
    return {"answerer": state.copilot.label, "personas": [p.card()["persona"] for p in PERSONAS.values()]}


@router.post("/api/copilot/answer", responses=ERRORS, response_class=StreamingResponse)
async def copilot_answer(body: CopilotAnswerRequest, state: State, principal: Who) -> StreamingResponse:
    call = await owned_call(state, body.mic_call_id, principal)
    if call.persona != "copilot/mic":
        raise ApiError(400, "mic_call_id must be a copilot/mic call.", "not_a_copilot_call", param="mic_call_id")
    return StreamingResponse(stream_answer(state.store, call.id, state.copilot, body.question),
                             media_type="text/event-stream", headers={"Cache-Control": "no-store"})
