"""What the engine's routes depend on: the engine, and who is calling (by API key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from parley.engine.engine import ClientSecret, Engine
from parley.engine.session import check_transcription
from parley.http.bearer import bearer_token
from parley.http.errors import ApiError
from parley.protocol.errors import ProtocolError
from parley.protocol.session import SessionConfig, parse_session


async def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(engine_of)]


async def caller(request: Request, engine: EngineDep) -> ClientSecret | None:
    """A standard key (None) or an ephemeral key's secret; ApiError(401) for anything else."""
    return engine.authenticate(bearer_token(request.headers.get("authorization")))


async def standard_caller(secret: Annotated[ClientSecret | None, Depends(caller)]) -> None:
    if secret is not None:
        raise ApiError(401, "Ephemeral keys cannot create client secrets; use a standard key.", "invalid_api_key")


AnyKey = Annotated[ClientSecret | None, Depends(caller)]
StandardKey = Annotated[None, Depends(standard_caller)]


def session_config(data: Any) -> SessionConfig:
    """A session config from a request, or the protocol's refusal (its code, the parameter's path) as a 400."""
    try:
        config = parse_session(data)
        check_transcription(config)  # a language the local model cannot do is refused, as OpenAI would
        return config
    except ProtocolError as exc:
        raise ApiError(400, exc.message, exc.code, param=exc.param, type=exc.type) from None
