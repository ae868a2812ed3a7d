"""Phone numbers as the API shows them: masked, so History never shows who called in full."""

from __future__ import annotations

KEEP_DIGITS = 2


def mask_number(number: str | None) -> str | None:
    """"+15551234567" -> "+•••••••••67": the shape and the last two digits (enough to tell your
    own numbers apart), nothing that identifies the caller. A SIP URI or a name keeps only its
    last two characters too."""
    if not number:
        return None
    number = number.strip()
    prefix = "+" if number.startswith("+") else ""
    body = number.removeprefix("+")
    if len(body) <= KEEP_DIGITS:
        return prefix + "•" * len(body)
    return prefix + "•" * (len(body) - KEEP_DIGITS) + body[-KEEP_DIGITS:]
