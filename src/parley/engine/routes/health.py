"""`GET /v1/realtime/healthz`: sessions, calls, and late agent audio frames."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from parley.http.body import JsonBodyRoute

from .deps import EngineDep

router = APIRouter(route_class=JsonBodyRoute, tags=["ops"])


@router.get("/v1/realtime/healthz")
async def healthz(engine: EngineDep) -> dict[str, Any]:
    late = engine.late_frames + sum(call.track.late_frames for call in engine.calls.values())
    return {"status": "ok", "sessions": len(engine.runners), "calls": len(engine.calls), "late_frames": late}
