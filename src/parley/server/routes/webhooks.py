"""`POST /webhooks/openai`: OpenAI's webhooks (Standard Webhooks signatures), for now the
`realtime.call.incoming` of a SIP call to the project's number (`parley.server.sip_calls`).

The signature is checked with the `openai` SDK's helper against `PARLEY_OPENAI_WEBHOOK_SECRET`
before anything else; a webhook id is acted on once (`server.replays`). Refusals are JSON errors
and start nothing. An attempt that fails part-way (a 5xx) forgets its id again, so that the
sender's retry of the same delivery is handled rather than refused as a replay.
"""

from __future__ import annotations

import logging
from typing import Any

import openai
from fastapi import APIRouter, Request
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from parley.http.errors import ApiError

from ..sip_calls import incoming_call
from .calls import _self_url
from .deps import State

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

MAX_WEBHOOK_BYTES = 64 * 1024
WEBHOOK_PATH = "/webhooks/openai"


@router.post(WEBHOOK_PATH, responses={400: {"description": "Bad signature or body"},
                                      409: {"description": "A webhook id already acted on"},
                                      403: {"description": "No webhook secret configured: the door is off"}})
async def openai_webhook(request: Request, state: State) -> dict[str, Any]:
    secret = state.settings.openai_webhook_secret
    if secret is None:
        raise ApiError(403, "This server takes no OpenAI webhooks (set PARLEY_OPENAI_WEBHOOK_SECRET).",
                       "webhooks_not_configured")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ApiError(413, f"A webhook body may be at most {MAX_WEBHOOK_BYTES} bytes.", "body_too_large")
    try:
        event = state.upstream.client.webhooks.unwrap(body, request.headers, secret=secret.get_secret_value())
    except (openai.InvalidWebhookSignatureError, ValueError) as exc:
        state.metrics.inc("parley_webhooks_total", outcome="bad_signature")
        log.info("refused a webhook: %s", str(exc)[:200])
        raise ApiError(400, "The webhook signature does not verify.", "invalid_webhook_signature") from None
    webhook_id = request.headers["webhook-id"][:256]
    if not await state.replays.first_time(webhook_id):
        state.metrics.inc("parley_webhooks_total", outcome="replay")
        log.info("refused a replayed webhook %s", webhook_id[:64])
        raise ApiError(409, "This webhook id was already received.", "duplicate_webhook")
    if not isinstance(event, RealtimeCallIncomingWebhookEvent):
        state.metrics.inc("parley_webhooks_total", outcome="ignored")
        return {"status": "ignored", "type": str(getattr(event, "type", ""))[:64]}
    state.metrics.inc("parley_webhooks_total", outcome="ok")
    headers = [{"name": h.name, "value": h.value} for h in event.data.sip_headers]
    try:
        return await incoming_call(state, event.data.call_id, headers, self_url=_self_url(request, state.settings))
    except BaseException:
        state.metrics.inc("parley_webhooks_total", outcome="failed")
        log.warning("webhook %s failed part-way; its retry will be handled", webhook_id[:64])
        await state.replays.forget(webhook_id)
        raise
