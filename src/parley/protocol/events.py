"""Builders for every GA server event, as JSON-ready dicts with fresh `event_id`s.

Names mirror the event types (`response.output_audio.delta` -> `response_output_audio_delta`).
"""

from __future__ import annotations

import time
from typing import Any

from .errors import error_event
from .ids import event_id

__all__ = ["error_event"]  # re-exported: `error` is a server event too

Event = dict[str, Any]


def _event(type: str, **fields: Any) -> Event:
    return {"type": type, "event_id": event_id(), **fields}


# -- session and conversation ----------------------------------------------------------------


def session_created(session: dict[str, Any]) -> Event:
    return _event("session.created", session=session)


def session_updated(session: dict[str, Any]) -> Event:
    return _event("session.updated", session=session)


def conversation_created(conversation_id: str) -> Event:
    return _event("conversation.created", conversation={"id": conversation_id, "object": "realtime.conversation"})


def rate_limits_updated(rate_limits: list[dict[str, Any]]) -> Event:
    return _event("rate_limits.updated", rate_limits=rate_limits)


def rate_limit(name: str, limit: int, remaining: int, reset_seconds: float) -> dict[str, Any]:
    return {"name": name, "limit": limit, "remaining": remaining, "reset_seconds": reset_seconds}


# -- input audio buffer ----------------------------------------------------------------------


def input_audio_buffer_speech_started(audio_start_ms: int, item_id: str) -> Event:
    return _event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)


def input_audio_buffer_speech_stopped(audio_end_ms: int, item_id: str) -> Event:
    return _event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)


def input_audio_buffer_committed(item_id: str, previous_item_id: str | None) -> Event:
    return _event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def input_audio_buffer_cleared() -> Event:
    return _event("input_audio_buffer.cleared")


def input_audio_buffer_timeout_triggered(audio_start_ms: int, audio_end_ms: int, item_id: str) -> Event:
    return _event("input_audio_buffer.timeout_triggered", audio_start_ms=audio_start_ms, audio_end_ms=audio_end_ms,
               item_id=item_id)


def input_audio_buffer_dtmf_event_received(key: str, received_at: int | None = None) -> Event:
    # The only server event without an event_id (as in the schema).
    return {"type": "input_audio_buffer.dtmf_event_received", "event": key,
            "received_at": int(time.time()) if received_at is None else received_at}


# -- conversation items ----------------------------------------------------------------------


def conversation_item_added(item: dict[str, Any], previous_item_id: str | None) -> Event:
    return _event("conversation.item.added", previous_item_id=previous_item_id, item=item)


def conversation_item_done(item: dict[str, Any], previous_item_id: str | None) -> Event:
    return _event("conversation.item.done", previous_item_id=previous_item_id, item=item)


def conversation_item_created(item: dict[str, Any], previous_item_id: str | None) -> Event:
    """Beta's single item event (GA clients get `added` + `done`)."""
    return _event("conversation.item.created", previous_item_id=previous_item_id, item=item)


def conversation_item_retrieved(item: dict[str, Any]) -> Event:
    return _event("conversation.item.retrieved", item=item)


def conversation_item_truncated(item_id: str, content_index: int, audio_end_ms: int) -> Event:
    return _event("conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms)


def conversation_item_deleted(item_id: str) -> Event:
    return _event("conversation.item.deleted", item_id=item_id)


def transcription_usage_duration(seconds: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(seconds, 3)}


def transcription_usage_tokens(input_tokens: int, output_tokens: int, audio_tokens: int = 0) -> dict[str, Any]:
    return {"type": "tokens", "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_token_details": {"text_tokens": input_tokens - audio_tokens, "audio_tokens": audio_tokens}}


def conversation_item_input_audio_transcription_delta(item_id: str, delta: str, content_index: int = 0) -> Event:
    return _event("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=content_index,
               delta=delta)


def conversation_item_input_audio_transcription_completed(
    item_id: str, transcript: str, usage: dict[str, Any], content_index: int = 0
) -> Event:
    return _event("conversation.item.input_audio_transcription.completed", item_id=item_id,
               content_index=content_index, transcript=transcript, usage=usage)


def conversation_item_input_audio_transcription_failed(
    item_id: str, code: str, message: str, content_index: int = 0
) -> Event:
    return _event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=content_index,
               error={"type": "transcription_error", "code": code, "message": message, "param": None})


def conversation_item_input_audio_transcription_segment(
    item_id: str, segment_id: str, text: str, start: float, end: float, speaker: str, content_index: int = 0
) -> Event:
    return _event("conversation.item.input_audio_transcription.segment", item_id=item_id, content_index=content_index,
               id=segment_id, text=text, start=start, end=end, speaker=speaker)


# -- responses -------------------------------------------------------------------------------


def usage(
    *,
    input_text: int = 0,
    input_audio: int = 0,
    input_image: int = 0,
    cached_text: int = 0,
    cached_audio: int = 0,
    cached_image: int = 0,
    output_text: int = 0,
    output_audio: int = 0,
) -> dict[str, Any]:
    """A usage object whose totals agree: input = text+audio+image, cached within input."""
    inp = input_text + input_audio + input_image
    out = output_text + output_audio
    cached = cached_text + cached_audio + cached_image
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {
            "text_tokens": input_text, "audio_tokens": input_audio, "image_tokens": input_image,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio,
                                      "image_tokens": cached_image},
        },
        "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }


def response_object(
    response_id: str,
    *,
    status: str = "in_progress",
    status_details: dict[str, Any] | None = None,
    output: list[dict[str, Any]] | None = None,
    conversation_id: str | None = None,
    output_modalities: list[str] | None = None,
    max_output_tokens: int | str = "inf",
    audio_output: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": status_details,
        "output": output or [],
        "conversation_id": conversation_id,
        "output_modalities": output_modalities or ["audio"],
        "max_output_tokens": max_output_tokens,
        "metadata": metadata,
        "usage": usage,
    }
    if audio_output is not None:
        resp["audio"] = {"output": audio_output}
    return resp


def status_details(type: str, reason: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"type": type}
    if reason is not None:
        details["reason"] = reason
    if error is not None:
        details["error"] = error
    return details


def response_created(response: dict[str, Any]) -> Event:
    return _event("response.created", response=response)


def response_done(response: dict[str, Any]) -> Event:
    return _event("response.done", response=response)


def response_output_item_added(response_id: str, output_index: int, item: dict[str, Any]) -> Event:
    return _event("response.output_item.added", response_id=response_id, output_index=output_index, item=item)


def response_output_item_done(response_id: str, output_index: int, item: dict[str, Any]) -> Event:
    return _event("response.output_item.done", response_id=response_id, output_index=output_index, item=item)


def _part(response_id: str, item_id: str, output_index: int, content_index: int) -> dict[str, Any]:
    return {"response_id": response_id, "item_id": item_id, "output_index": output_index,
            "content_index": content_index}


def response_content_part_added(
    response_id: str, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
) -> Event:
    return _event("response.content_part.added", **_part(response_id, item_id, output_index, content_index), part=part)


def response_content_part_done(
    response_id: str, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
) -> Event:
    return _event("response.content_part.done", **_part(response_id, item_id, output_index, content_index), part=part)


def response_output_text_delta(response_id: str, item_id: str, output_index: int, content_index: int,
                               delta: str) -> Event:
    return _event("response.output_text.delta", **_part(response_id, item_id, output_index, content_index), delta=delta)


def response_output_text_done(response_id: str, item_id: str, output_index: int, content_index: int,
                              text: str) -> Event:
    return _event("response.output_text.done", **_part(response_id, item_id, output_index, content_index), text=text)


def response_output_audio_delta(response_id: str, item_id: str, output_index: int, content_index: int,
                                delta: str) -> Event:
    return _event("response.output_audio.delta", **_part(response_id, item_id, output_index, content_index), delta=delta)


def response_output_audio_done(response_id: str, item_id: str, output_index: int, content_index: int) -> Event:
    return _event("response.output_audio.done", **_part(response_id, item_id, output_index, content_index))


def response_output_audio_transcript_delta(response_id: str, item_id: str, output_index: int, content_index: int,
                                           delta: str) -> Event:
    return _event("response.output_audio_transcript.delta", **_part(response_id, item_id, output_index, content_index),
               delta=delta)


def response_output_audio_transcript_done(response_id: str, item_id: str, output_index: int, content_index: int,
                                          transcript: str) -> Event:
    return _event("response.output_audio_transcript.done", **_part(response_id, item_id, output_index, content_index),
               transcript=transcript)


def response_function_call_arguments_delta(response_id: str, item_id: str, output_index: int, call_id: str,
                                           delta: str) -> Event:
    return _event("response.function_call_arguments.delta", response_id=response_id, item_id=item_id,
               output_index=output_index, call_id=call_id, delta=delta)


def response_function_call_arguments_done(response_id: str, item_id: str, output_index: int, call_id: str,
                                          name: str, arguments: str) -> Event:
    return _event("response.function_call_arguments.done", response_id=response_id, item_id=item_id,
               output_index=output_index, call_id=call_id, name=name, arguments=arguments)


# -- WebRTC / SIP output buffer ---------------------------------------------------------------


def output_audio_buffer_started(response_id: str) -> Event:
    return _event("output_audio_buffer.started", response_id=response_id)


def output_audio_buffer_stopped(response_id: str) -> Event:
    return _event("output_audio_buffer.stopped", response_id=response_id)


def output_audio_buffer_cleared(response_id: str) -> Event:
    return _event("output_audio_buffer.cleared", response_id=response_id)


# -- MCP (built for completeness; the local engine does not call MCP servers) -----------------


def mcp_list_tools_in_progress(item_id: str) -> Event:
    return _event("mcp_list_tools.in_progress", item_id=item_id)


def mcp_list_tools_completed(item_id: str) -> Event:
    return _event("mcp_list_tools.completed", item_id=item_id)


def mcp_list_tools_failed(item_id: str) -> Event:
    return _event("mcp_list_tools.failed", item_id=item_id)


def response_mcp_call_arguments_delta(response_id: str, item_id: str, output_index: int, delta: str) -> Event:
    return _event("response.mcp_call_arguments.delta", response_id=response_id, item_id=item_id,
               output_index=output_index, delta=delta)


def response_mcp_call_arguments_done(response_id: str, item_id: str, output_index: int, arguments: str) -> Event:
    return _event("response.mcp_call_arguments.done", response_id=response_id, item_id=item_id,
               output_index=output_index, arguments=arguments)


def response_mcp_call_in_progress(item_id: str, output_index: int) -> Event:
    return _event("response.mcp_call.in_progress", item_id=item_id, output_index=output_index)


def response_mcp_call_completed(item_id: str, output_index: int) -> Event:
    return _event("response.mcp_call.completed", item_id=item_id, output_index=output_index)


def response_mcp_call_failed(item_id: str, output_index: int) -> Event:
    return _event("response.mcp_call.failed", item_id=item_id, output_index=output_index)
