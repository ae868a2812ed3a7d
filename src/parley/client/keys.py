"""Minting ephemeral keys for clients and key providers: from an upstream with a standard key
(`POST /v1/realtime/client_secrets`), or from a Parley server (`POST /api/session`), which keeps
the real key and the agent's configuration to itself."""

from __future__ import annotations

from typing import Any

import httpx

from parley.client.transport import ConnectError, connect_error

__all__ = ["client_secret_provider", "mint_client_secret", "server_key_provider"]


def _v1(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


async def mint_client_secret(base_url: str, api_key: str, *, session: dict[str, Any] | None = None,
                             expires_after: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """An ephemeral key: the JSON answer `{"value": "ek_...", "expires_at", "session"}`.

    `base_url` is the API base ("https://api.openai.com/v1", "http://127.0.0.1:8000"); the key
    is a standard key; `expires_after` is the TTL in seconds (10-7200; upstream default 600)."""
    body: dict[str, Any] = {}
    if session is not None:
        body["session"] = {"type": "realtime", **session}
    if expires_after is not None:
        body["expires_after"] = {"anchor": "created_at", "seconds": expires_after}
    async with httpx.AsyncClient(timeout=timeout) as http:
        try:
            response = await http.post(_v1(base_url) + "/realtime/client_secrets", json=body,
                                       headers={"Authorization": f"Bearer {api_key}"})
        except httpx.HTTPError as exc:
            raise ConnectError(f"Could not mint a client secret at {base_url}: {exc}") from None
    if response.status_code != 200:
        raise connect_error(response.status_code, response.content, "Minting a client secret")
    data: dict[str, Any] = response.json()
    return data


def client_secret_provider(base_url: str, api_key: str, *, session: dict[str, Any] | None = None,
                           expires_after: int | None = None) -> Any:
    """A `key_provider` for RealtimeClient that mints a fresh ephemeral key on every call."""

    async def provide() -> dict[str, Any]:
        return await mint_client_secret(base_url, api_key, session=session, expires_after=expires_after)

    return provide


def server_key_provider(server_url: str, *, persona: str | None = None, token: str | None = None,
                        timeout: float = 10.0) -> Any:
    """A `key_provider` for RealtimeClient on a Parley server (`parley serve`): a fresh ephemeral
    key from the server's `POST /api/session` on every call, bound to the session of `persona`
    (the server's default, Sarah, when None) as the server holds it.

    `token` is a bearer token for a server with `PARLEY_AUTH=bearer` or `cookie`. The server's
    identity cookie is kept between calls, so every key goes to the same user. A key counts
    against the user's concurrent calls until it expires (`PARLEY_EPHEMERAL_KEY_TTL_SECONDS`)."""
    base = server_url.rstrip("/").removesuffix("/v1")
    cookies = httpx.Cookies()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"persona": persona} if persona else {}

    async def provide() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=timeout, cookies=cookies, headers=headers) as http:
            try:
                response = await http.post(base + "/api/session", json=body)
            except httpx.HTTPError as exc:
                raise ConnectError(f"Could not get a key from the Parley server at {base}: {exc}") from None
            cookies.update(http.cookies)
        if response.status_code != 200:
            raise connect_error(response.status_code, response.content, "Getting a key from the Parley server")
        data: dict[str, Any] = response.json()
        return data

    return provide
