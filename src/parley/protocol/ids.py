"""Identifiers shaped like OpenAI's: a prefix, an underscore and 22 base62 characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


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


def rtc_call_id() -> str:
    return new_id("rtc")


def client_secret() -> str:
    return new_id("ek")
