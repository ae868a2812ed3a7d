"""Ephemeral keys: GA `POST /v1/realtime/client_secrets`, and the beta `/v1/realtime/sessions`
and `/v1/realtime/transcription_sessions` (a flat beta session, the key under `client_secret`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from parley.http.body import JsonBodyRoute, read_json_object
from parley.http.errors import ApiError
from parley.protocol import ids
from parley.protocol.beta import session_from_beta, session_to_beta
from parley.protocol.limits import CLIENT_SECRET_TTL_DEFAULT, CLIENT_SECRET_TTL_SECONDS
from parley.protocol.session import session_resource

from .deps import EngineDep, StandardKey, session_config
from .schemas import ERRORS, GA_SESSION

router = APIRouter(route_class=JsonBodyRoute, tags=["client secrets"])

EXPIRES_AFTER = {
    "type": "object", "description": "How long the key lives, from its creation.",
    "properties": {"anchor": {"type": "string", "enum": ["created_at"]},
                   "seconds": {"type": "integer", "minimum": CLIENT_SECRET_TTL_SECONDS[0], "maximum": CLIENT_SECRET_TTL_SECONDS[1],
                               "default": CLIENT_SECRET_TTL_DEFAULT}},
}
_BETA_CLIENT_SECRET = {"type": "object", "properties": {"expires_after": EXPIRES_AFTER}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


CLIENT_SECRETS_BODY = _json_body({"type": "object", "additionalProperties": False,
                                  "properties": {"expires_after": EXPIRES_AFTER, "session": GA_SESSION}})
BETA_SESSION_BODY = _json_body({
    "type": "object", "description": "A beta realtime session (flat), and the key's lifetime.",
    "properties": {"client_secret": _BETA_CLIENT_SECRET, "model": {"type": "string"},
                   "instructions": {"type": "string"}, "voice": {"type": "string"},
                   "modalities": {"type": "array", "items": {"type": "string", "enum": ["text", "audio"]}},
                   "input_audio_format": {"type": "string"}, "output_audio_format": {"type": "string"},
                   "input_audio_transcription": {"type": "object"}, "turn_detection": {"type": "object"},
                   "tools": {"type": "array", "items": {"type": "object"}}, "tool_choice": {},
                   "speed": {"type": "number"}, "max_response_output_tokens": {}}})
BETA_TRANSCRIPTION_BODY = _json_body({
    "type": "object", "description": "A beta transcription session (flat), and the key's lifetime.",
    "properties": {"client_secret": _BETA_CLIENT_SECRET, "input_audio_format": {"type": "string"},
                   "input_audio_transcription": {"type": "object"}, "turn_detection": {"type": "object"},
                   "input_audio_noise_reduction": {}, "include": {"type": "array", "items": {"type": "string"}}}})


def secret_ttl(value: Any, param: str) -> int:
    """The key's lifetime in seconds from an `expires_after` object, or ApiError(400)."""
    if value is None:
        return CLIENT_SECRET_TTL_DEFAULT
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid type for '{param}': expected an object.", "invalid_type", param=param)
    seconds = value.get("seconds", CLIENT_SECRET_TTL_DEFAULT)
    if value.get("anchor", "created_at") != "created_at":
        raise ApiError(400, f"Invalid '{param}.anchor': only 'created_at' is supported.", "invalid_value",
                       param=f"{param}.anchor")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not (
        CLIENT_SECRET_TTL_SECONDS[0] <= seconds <= CLIENT_SECRET_TTL_SECONDS[1]
    ):
        raise ApiError(400, f"Invalid '{param}.seconds': expected an integer between {CLIENT_SECRET_TTL_SECONDS[0]} and "
                            f"{CLIENT_SECRET_TTL_SECONDS[1]}.", "invalid_value", param=f"{param}.seconds")
    return seconds


@router.post("/v1/realtime/client_secrets", responses=ERRORS, openapi_extra=CLIENT_SECRETS_BODY)
async def client_secrets(request: Request, engine: EngineDep, _key: StandardKey) -> dict[str, Any]:
    body = await read_json_object(request)
    unknown = set(body) - {"expires_after", "session"}
    if unknown:
        name = sorted(unknown)[0][:64]
        raise ApiError(400, f"Unknown parameter: '{name}'.", "unknown_parameter", param=name)
    ttl = secret_ttl(body.get("expires_after"), "expires_after")
    config = session_config(body.get("session") or {"type": "realtime"})
    secret = engine.mint_secret(config, ttl)
    return {"value": secret.value, "expires_at": secret.expires_at,
            "session": session_resource(config, id=ids.session_id(), expires_at=0)}


async def _beta_secret(request: Request, engine: EngineDep, kind: Literal["realtime", "transcription"]) -> Any:
    body = await read_json_object(request)
    holder = body.pop("client_secret", None) or {}
    if not isinstance(holder, dict):
        raise ApiError(400, "Invalid type for 'client_secret': expected an object.", "invalid_type",
                       param="client_secret")
    ttl = secret_ttl(holder.get("expires_after") or holder.get("expires_at"), "client_secret.expires_after")
    config = session_config(session_from_beta(body, kind=kind))
    secret = engine.mint_secret(config, ttl)
    resource = session_to_beta(session_resource(config, id=ids.session_id(), expires_at=secret.expires_at))
    return {**resource, "client_secret": {"value": secret.value, "expires_at": secret.expires_at}}


@router.post("/v1/realtime/sessions", responses=ERRORS, openapi_extra=BETA_SESSION_BODY)
async def beta_sessions(request: Request, engine: EngineDep, _key: StandardKey) -> Any:
    return await _beta_secret(request, engine, "realtime")


@router.post("/v1/realtime/transcription_sessions", responses=ERRORS, openapi_extra=BETA_TRANSCRIPTION_BODY)
async def beta_transcription_sessions(request: Request, engine: EngineDep, _key: StandardKey) -> Any:
    return await _beta_secret(request, engine, "transcription")
