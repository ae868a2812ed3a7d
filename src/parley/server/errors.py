"""Keeping secrets out of messages. (Errors are `parley.http.errors`; `ApiError` is re-exported
here for `calls.py` and `recorder.py`, which import it from the server.)"""

from __future__ import annotations

import re

from parley.http.errors import ApiError

__all__ = ["ApiError", "scrub"]

_KEYLIKE = re.compile(r"\b(sk|rk|ek|sess)-[A-Za-z0-9_\-*.]{6,}")


def scrub(text: str, *secrets: str | None) -> str:
    """Remove anything key-like (and the given secrets) from a message meant for a client or a log."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)
