"""SDP offers at `POST .../calls`: reading them off the request, and checking them.

Both apps take the offer the ways OpenAI's `/v1/realtime/calls` does: the raw body as
`application/sdp`, or the `sdp` part of a `multipart/form-data` body with other named parts
(the engine's `session`, the server's `persona`). The check is RFC 8866's line syntax plus
what a WebRTC offer with audio needs; it runs before anything (aiortc, an upstream) sees it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from .errors import ApiError

MAX_OFFER_BYTES = 64 * 1024

_LINE = re.compile(r"^[a-z]=[\x20-\x7e\t]*$")


@dataclass(frozen=True)
class OfferBody:
    sdp: str  # as sent: `check_offer` has not run on it yet
    parts: dict[str, str] = field(default_factory=dict)  # the other multipart parts, as text


def media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


async def read_offer(request: Request, *, parts: Collection[str] = (), max_bytes: int = MAX_OFFER_BYTES,
                     also_accepted: str = "") -> OfferBody:
    """The offer and the allowed other parts; ApiError for another media type (415), a malformed
    or oversized form, a missing `sdp` part or an unknown one (400), text that is not UTF-8."""
    kind = media_type(request)
    if kind == "application/sdp":
        raw = await request.body()
        if len(raw) > max_bytes:
            raise _offer_too_large(max_bytes)
        return OfferBody(_text(raw, "sdp"))
    if kind != "multipart/form-data":
        others = "".join(f", '{name}'" for name in parts)
        raise ApiError(415, f"Send the SDP offer as application/sdp, or as multipart/form-data with the parts "
                            f"'sdp'{others}{also_accepted}.", "unsupported_media_type")
    allowed = {"sdp", *parts}
    try:
        # A few more fields than allowed, so that an unknown one is named in the refusal.
        form = await request.form(max_files=len(allowed), max_fields=len(allowed) + 2, max_part_size=max_bytes)
    except MultiPartException as exc:
        raise _bad_form(exc.message) from None
    except HTTPException as exc:
        if isinstance(exc, ApiError):  # e.g. the body limit
            raise
        raise _bad_form(str(exc.detail)) from None  # Starlette's wrapping of MultiPartException
    texts: dict[str, str] = {}
    for name, value in form.multi_items():
        if name not in allowed:
            raise ApiError(400, f"Unknown parameter: '{name[:64]}' (the parts are {', '.join(sorted(allowed))}).",
                           "unknown_parameter", param=name[:64])
        if name in texts:
            raise ApiError(400, f"The part '{name}' is given twice.", "invalid_value", param=name)
        if isinstance(value, UploadFile):
            data = await value.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise _offer_too_large(max_bytes) if name == "sdp" else _bad_form(f"the part '{name}' is too large")
            texts[name] = _text(data, name)
        else:
            texts[name] = value
    if "sdp" not in texts:
        raise ApiError(400, "Missing required parameter: 'sdp'.", "missing_required_parameter", param="sdp")
    sdp = texts.pop("sdp")
    return OfferBody(sdp, texts)


def check_offer(text: str, max_bytes: int = MAX_OFFER_BYTES) -> str:
    """The offer with CRLF line endings, or ApiError(400) saying what is wrong with it (413 if too large)."""

    def bad(why: str) -> ApiError:
        return ApiError(400, f"Invalid SDP offer: {why}.", "invalid_sdp", param="sdp")

    if not text or not text.strip():
        raise bad("it is empty")
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _offer_too_large(max_bytes)
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line != ""]
    if lines[0] != "v=0":
        raise bad("it must start with the line 'v=0'")
    for n, line in enumerate(lines, 1):
        if not _LINE.match(line):
            raise bad(f"line {n} is not '<letter>=<value>' in printable ASCII")
    types = {line[0] for line in lines}
    for needed in ("o", "s", "t", "m"):
        if needed not in types:
            raise bad(f"it has no '{needed}=' line")
    if not any(line.startswith("m=audio ") for line in lines):
        raise bad("it offers no audio (m=audio)")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise bad("it has no DTLS fingerprint (a=fingerprint)")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        raise bad("it has no ICE credentials (a=ice-ufrag)")
    return "\r\n".join(lines) + "\r\n"


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        code = "invalid_sdp" if name == "sdp" else "invalid_value"
        raise ApiError(400, f"The '{name}' part is not UTF-8 text.", code, param=name) from None


def _offer_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"The SDP offer is larger than {max_bytes} bytes.", "sdp_too_large", param="sdp")


def _bad_form(why: str) -> ApiError:
    return ApiError(400, f"Malformed multipart body: {why}.", "invalid_multipart")
