"""SIP call rules, sans-I/O: the SDP answer, the INVITE's headers as OpenAI reports them, and the
signed `realtime.call.incoming` webhook (Standard Webhooks, as OpenAI sends it)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiosipua import SdpMessage, SdpNegotiationError, SipRequest, negotiate_sdp, parse_sdp
from standardwebhooks import Webhook

from .media import CODECS, DTMF_PT

# Never passed on in the webhook (OpenAI: "excluding SIP authorization headers").
HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization"})
MAX_SIP_HEADERS = 64
MAX_HEADER_VALUE = 1024


class OfferError(ValueError):
    """An INVITE whose SDP cannot be answered (no audio, no G.711): the SIP status to refuse it with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Media:
    remote: tuple[str, int]  # where the caller receives RTP (and sends it from)
    payload_type: int  # PCMU or PCMA, the caller's first choice
    dtmf_payload_type: int | None  # the caller's telephone-event type, if it offered one


def read_offer(request: SipRequest) -> tuple[SdpMessage, Media]:
    """The caller's SDP offer and the media it asks for; OfferError if there is none we can do."""
    if not request.body or (request.content_type or "").split(";")[0].strip().lower() != "application/sdp":
        raise OfferError(488, "Not Acceptable Here (an SDP offer is required)")
    try:
        offer = parse_sdp(request.text)
    except (ValueError, IndexError) as exc:
        raise OfferError(400, f"Bad Request (SDP: {exc})"[:120]) from None
    audio, remote = offer.audio, offer.rtp_address
    if audio is None or remote is None or not 0 < remote[1] < 65536:
        raise OfferError(488, "Not Acceptable Here (no audio stream)")
    chosen = next((c.payload_type for c in audio.codecs if c.payload_type in CODECS), None)
    if chosen is None:
        raise OfferError(488, "Not Acceptable Here (PCMU or PCMA only)")
    dtmf = next((c.payload_type for c in audio.codecs if c.encoding_name.lower() == "telephone-event"), None)
    return offer, Media(remote, chosen, dtmf)


def answer_sdp(offer: SdpMessage, local: tuple[str, int], media: Media) -> SdpMessage:
    """Our answer: the caller's codec, its telephone-event type (RFC 4733 says to keep the offer's)."""
    try:
        answer, _chosen = negotiate_sdp(offer, local[0], local[1], supported_codecs=[media.payload_type],
                                        dtmf_payload_type=media.dtmf_payload_type or DTMF_PT,
                                        session_name="parley")
    except SdpNegotiationError as exc:
        raise OfferError(488, f"Not Acceptable Here ({exc})"[:120]) from None
    return answer


def sip_headers(request: SipRequest) -> list[dict[str, str]]:
    """The INVITE's headers as the webhook lists them (name, value; repeats kept; no credentials)."""
    out: list[dict[str, str]] = []
    for name, values in request.headers.items():
        if name.lower() in HIDDEN_HEADERS:
            continue
        pretty = "-".join(p[:1].upper() + p[1:] for p in name.split("-")) if name.islower() else name
        for value in values:
            if len(out) < MAX_SIP_HEADERS:
                out.append({"name": pretty, "value": value[:MAX_HEADER_VALUE]})
    return out


@dataclass(frozen=True)
class SignedWebhook:
    body: bytes
    headers: dict[str, str]


def incoming_call_webhook(call_id: str, headers: list[dict[str, str]], secret: str,
                          now: float | None = None) -> SignedWebhook:
    """`realtime.call.incoming` as OpenAI posts it: the event, and its Standard Webhooks headers."""
    now = time.time() if now is None else now
    event: dict[str, Any] = {
        "object": "event", "id": f"evt_{secrets.token_hex(12)}", "type": "realtime.call.incoming",
        "created_at": int(now), "data": {"call_id": call_id, "sip_headers": headers},
    }
    body = json.dumps(event, separators=(",", ":"))
    msg_id = f"wh_{secrets.token_hex(12)}"
    stamp = dt.datetime.fromtimestamp(int(now), dt.UTC)
    signature = Webhook(secret).sign(msg_id, stamp, body)
    return SignedWebhook(body.encode(), {"webhook-id": msg_id, "webhook-timestamp": str(int(now)),
                                         "webhook-signature": signature, "content-type": "application/json"})
