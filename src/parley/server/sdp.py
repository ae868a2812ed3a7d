"""A sanity check of a browser's SDP offer before it goes upstream (RFC 8866 line syntax, WebRTC needs)."""

from __future__ import annotations

import re

from .errors import ApiError

_LINE = re.compile(r"^[a-z]=[\x20-\x7e\t]*$")


def validate_offer(text: str, max_bytes: int) -> str:
    """The offer with CRLF line endings, or ApiError(400) saying what is wrong with it."""

    def bad(why: str) -> ApiError:
        return ApiError(400, f"Invalid SDP offer: {why}.", "invalid_sdp", param="sdp")

    if not text or not text.strip():
        raise bad("it is empty")
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ApiError(413, f"The SDP offer is larger than {max_bytes} bytes.", "sdp_too_large", param="sdp")
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
