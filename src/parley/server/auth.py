"""Who is calling: pluggable authenticators.

* `none` (local use): no login; each browser gets a signed `parley_client` cookie with a random id,
  and that id is its user. A client that sends no cookie is limited by its address instead.
* `bearer`: `Authorization: Bearer <token>`; tokens come from `PARLEY_AUTH_TOKENS` (user -> token).
* `cookie`: a signed `parley_session` cookie (HMAC-SHA256 with `PARLEY_SESSION_SECRET`), issued by
  `POST /api/login` for a valid token or by any system that shares the secret; bearer tokens work too.

Any object with `async authenticate(request) -> Principal` can be passed to `create_app`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

from parley.http.bearer import bearer_token
from parley.http.errors import ApiError

CLIENT_COOKIE = "parley_client"
SESSION_COOKIE = "parley_session"


@dataclass(frozen=True)
class Principal:
    user_id: str
    # The key rate limits and caps count against: the user, or the address of a client that
    # proved no identity (no cookie yet), so dropping cookies does not reset the limits.
    limit_key: str
    method: str  # anonymous | client-cookie | bearer | session-cookie


class Authenticator(Protocol):
    async def authenticate(self, request: Request) -> Principal: ...


class Signer:
    """Compact HMAC-SHA256 signed tokens: base64url(json payload) + "." + base64url(signature)."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"parley-cookie:" + secret).digest()

    def sign(self, payload: dict[str, object]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
        sig = base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()).rstrip(b"=")
        return f"{body.decode()}.{sig.decode()}"

    def verify(self, token: str | None) -> dict[str, object] | None:
        if not token or len(token) > 4096 or token.count(".") != 1:
            return None
        body, sig = token.split(".")
        expected = base64.urlsafe_b64encode(hmac.new(self._key, body.encode(), hashlib.sha256).digest()).rstrip(b"=")
        if not hmac.compare_digest(expected, sig.encode()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        exp = payload.get("exp")
        if isinstance(exp, int | float) and exp < time.time():
            return None
        return payload


def client_address(request: Request, trust_forwarded_for: bool = False) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return request.client.host if request.client else "unknown"


def set_cookie_later(request: Request, name: str, value: str, max_age: int, secure: bool) -> None:
    """Ask CookieMiddleware to set a cookie on whatever response this request gets."""
    pending = getattr(request.state, "set_cookies", None)
    if pending is None:
        pending = []
        request.state.set_cookies = pending
    pending.append(_cookie_header(name, value, max_age, secure))


def _cookie_header(name: str, value: str, max_age: int, secure: bool) -> str:
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class TokenTable:
    def __init__(self, tokens: dict[str, str]) -> None:
        # Look up by the token's hash, then compare in constant time.
        self._by_hash = {hashlib.sha256(t.encode()).digest(): (user, t) for user, t in tokens.items() if t}

    def user_for(self, token: str | None) -> str | None:
        if not token:
            return None
        found = self._by_hash.get(hashlib.sha256(token.encode()).digest())
        if found is None or not hmac.compare_digest(found[1].encode(), token.encode()):
            return None
        return found[0]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


class NoAuth:
    def __init__(self, signer: Signer, *, secure: bool = False, trust_forwarded_for: bool = False) -> None:
        self.signer, self.secure, self.trust_forwarded_for = signer, secure, trust_forwarded_for

    async def authenticate(self, request: Request) -> Principal:
        payload = self.signer.verify(request.cookies.get(CLIENT_COOKIE))
        if payload is not None and isinstance(payload.get("c"), str):
            user = f"anon:{payload['c']}"
            return Principal(user, user, "client-cookie")
        client = secrets.token_hex(8)
        set_cookie_later(request, CLIENT_COOKIE, self.signer.sign({"c": client}), 365 * 24 * 3600, self.secure)
        address = client_address(request, self.trust_forwarded_for)
        return Principal(f"anon:{client}", f"ip:{address}", "anonymous")


class BearerAuth:
    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    async def authenticate(self, request: Request) -> Principal:
        user = self.tokens.user_for(bearer_token(request.headers.get("authorization")))
        if user is None:
            raise _unauthorized("A valid bearer token is required (Authorization: Bearer <token>).")
        return Principal(user, user, "bearer")


class CookieAuth:
    def __init__(self, signer: Signer, tokens: TokenTable) -> None:
        self.signer, self.tokens = signer, tokens

    async def authenticate(self, request: Request) -> Principal:
        payload = self.signer.verify(request.cookies.get(SESSION_COOKIE))
        if payload is not None and isinstance(payload.get("u"), str):
            user = str(payload["u"])
            return Principal(user, user, "session-cookie")
        by_token = self.tokens.user_for(bearer_token(request.headers.get("authorization")))
        if by_token is not None:
            return Principal(by_token, by_token, "bearer")
        raise _unauthorized("Sign in first: POST /api/login with your token, or send Authorization: Bearer <token>.")

    def session_cookie(self, user: str, ttl: int) -> str:
        return self.signer.sign({"u": user, "exp": int(time.time()) + ttl})
