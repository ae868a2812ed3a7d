"""Who am I: `GET /api/me`, `POST /api/login` (PARLEY_AUTH=cookie), `POST /api/logout`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from parley.http.body import JsonBodyRoute
from parley.http.errors import ApiError

from ..auth import CLIENT_COOKIE, SESSION_COOKIE, CookieAuth, client_address, set_cookie_later
from ..limits import retry_after
from .deps import ERRORS, State, Who

router = APIRouter(route_class=JsonBodyRoute, tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=4096)


@router.get("/api/me", responses=ERRORS)
async def me(state: State, principal: Who) -> dict[str, Any]:
    return {"user_id": principal.user_id, "auth": state.settings.auth, "method": principal.method}


@router.post("/api/login", responses=ERRORS)
async def login(request: Request, state: State, body: LoginRequest) -> dict[str, Any]:
    auth, settings = state.auth, state.settings
    if not isinstance(auth, CookieAuth):
        raise ApiError(404, "Sign-in is only used with PARLEY_AUTH=cookie.", "not_found")
    wait = await state.login_limiter.acquire("login:" + client_address(request, settings.trust_forwarded_for))
    if wait is not None:
        raise ApiError(429, "Too many sign-in attempts.", "rate_limited", headers={"Retry-After": retry_after(wait)})
    user = auth.tokens.user_for(body.token)
    if user is None:
        raise ApiError(401, "Unknown token.", "unauthorized")
    set_cookie_later(request, SESSION_COOKIE, auth.session_cookie(user, settings.session_ttl_seconds),
                     settings.session_ttl_seconds, settings.cookie_secure)
    return {"user_id": user}


@router.post("/api/logout")
async def logout(request: Request, state: State) -> dict[str, Any]:
    for name in (SESSION_COOKIE, CLIENT_COOKIE):
        if name in request.cookies:
            set_cookie_later(request, name, "", 0, state.settings.cookie_secure)
    return {"ok": True}
