"""Operations: `GET /healthz`, `GET /metrics` (Prometheus), and JSON 404s for unknown `/api/...`."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from parley.http.bearer import bearer_token
from parley.http.body import JsonBodyRoute
from parley.http.errors import ApiError

from .deps import State

router = APIRouter(route_class=JsonBodyRoute, tags=["ops"])


@router.get("/healthz")
async def healthz(state: State) -> JSONResponse:
    try:
        await asyncio.wait_for(state.store.ping(), 5)
        db = "ok"
    except Exception:
        db = "unavailable"
    body = {"status": "ok" if db == "ok" else "degraded", "upstream": state.upstream.kind, "database": db,
            "calls_active": state.calls.active_count()}
    return JSONResponse(body, status_code=200 if db == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(request: Request, state: State) -> PlainTextResponse:
    token = state.settings.metrics_token
    if token is not None:
        given = bearer_token(request.headers.get("authorization")) or ""
        if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise ApiError(401, "The metrics need Authorization: Bearer <PARLEY_METRICS_TOKEN>.", "unauthorized")
    # Shared mode: every live process's series, each with its `process` label (shared.metrics).
    text = await state.shared_metrics.render() if state.shared_metrics is not None else state.metrics.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# Included last: it answers any /api/ path no other route took.
api_not_found = APIRouter(route_class=JsonBodyRoute)


@api_not_found.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                         include_in_schema=False)
async def no_such_endpoint(rest: str) -> JSONResponse:
    raise ApiError(404, f"No such endpoint: /api/{rest[:100]}", "not_found")
