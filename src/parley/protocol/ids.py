"""Identifiers shaped like OpenAI's: a prefix, an underscore and 22 base62 characters.

An engine in a pool (`parley engine` with PARLEY_ENGINE_REDIS_URL) names itself in the ids of its
calls and ephemeral keys, `rtc_<engine>_<22 chars>`, `ek_<engine>_<22 chars>`: a server reaches a
call's engine from its id alone, with no lookup per call, as OpenAI routes a call by its ICE ufrag.
"""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
ENGINE_ID = re.compile(r"[a-z0-9]{1,16}")  # what an engine may call itself (no "_": it ends the part)


def new_id(prefix: str) -> str:
    # secrets.choice per character is slow on the audio path; one randbits call is enough.
    n = secrets.randbits(131)
    chars = []
    for _ in range(22):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return f"{prefix}_{''.join(chars)}"


def event_id() -> str:
    return new_id("event")


def item_id() -> str:
    return new_id("item")


def response_id() -> str:
    return new_id("resp")


def session_id() -> str:
    return new_id("sess")


def conversation_id() -> str:
    return new_id("conv")


def call_id() -> str:
    return new_id("call")


def rtc_call_id(engine: str | None = None) -> str:
    return new_id(f"rtc_{engine}" if engine else "rtc")


def client_secret(engine: str | None = None) -> str:
    return new_id(f"ek_{engine}" if engine else "ek")


def engine_of(value: str) -> str | None:
    """The engine a call id or ephemeral key names (`rtc_<engine>_...`), else None."""
    _, sep, rest = value.partition("_")
    engine, sep2, tail = rest.partition("_")
    if not sep or not sep2 or len(tail) != 22 or not ENGINE_ID.fullmatch(engine):
        return None
    return engine
