"""Hypothesis strategies for server events shaped like the protocol's but filled with anything, for
fuzzing the call recorder (tests/test_server_recorder.py, benchmarks/recorder_soak.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
anything = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)

TYPES = [
    "session.created", "session.updated", "conversation.item.added", "conversation.item.done",
    "conversation.item.created", "conversation.item.retrieved", "response.output_item.added",
    "response.output_item.done", "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed", "conversation.item.input_audio_transcription.failed",
    "conversation.item.truncated", "conversation.item.deleted", "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "response.created", "response.done", "response.output_audio_transcript.delta", "response.output_text.done",
    "response.output_audio.delta", "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "output_audio_buffer.started", "output_audio_buffer.cleared", "error", "rate_limits.updated", "unknown.event",
]
_ids = st.sampled_from(["item_a", "item_b", "item_c"])
_or = st.one_of
item = st.fixed_dictionaries({
    "id": _or(_ids, anything),
    "type": _or(st.sampled_from(["message", "function_call", "function_call_output"]), anything),
    "role": _or(st.sampled_from(["user", "assistant", "system"]), anything),
    "status": _or(st.sampled_from(["completed", "in_progress", "incomplete"]), anything),
    "name": _or(st.sampled_from(["record_outcome", "transfer_to_supervisor"]), anything),
    "call_id": _or(st.sampled_from(["call_1", "call_2"]), anything),
    "arguments": _or(st.just('{"new_monthly_price": 99.99}'), anything),
    "content": _or(st.lists(st.dictionaries(st.sampled_from(["type", "text", "transcript", "audio"]),
                                            _or(st.sampled_from(["input_text", "input_audio", "output_audio",
                                                                 "output_text", "text"]), anything)),
                            max_size=3), anything)})
usage = _or(st.fixed_dictionaries({"input_tokens": _or(st.integers(0, 10**6), anything),
                                   "output_tokens": _or(st.integers(0, 10**6), anything)}), anything)
response = _or(st.fixed_dictionaries(
    {"id": _or(st.sampled_from(["resp_1", "resp_2"]), anything), "status": _or(st.sampled_from(
        ["completed", "cancelled", "incomplete"]), anything), "output": _or(st.lists(item, max_size=2), anything),
     "conversation_id": _or(st.sampled_from(["conv_1", None]), anything), "usage": usage}), anything)
event: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={"item": _or(item, anything), "previous_item_id": _or(_ids, st.none(), anything),
              "item_id": _or(_ids, anything), "response_id": _or(st.sampled_from(["resp_1", "resp_2"]), anything),
              "transcript": anything, "delta": _or(st.just("AAAA"), st.text(max_size=8), anything),
              "usage": usage, "response": response, "audio_end_ms": _or(st.integers(0, 10**6), anything),
              "audio_start_ms": anything, "session": _or(st.fixed_dictionaries({"model": anything,
                                                                              "instructions": anything}), anything),
              "error": anything, "name": anything, "arguments": anything, "call_id": anything})
