"""Translation between the beta (`OpenAI-Beta: realtime=v1`) and GA shapes, both ways.

One engine speaks GA internally; a beta client's events are translated on the way in and the
server's events on the way out (docs/protocol.md, section 6).
"""

from __future__ import annotations

import copy
from typing import Any

_FORMAT_TO_BETA = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_FORMAT_FROM_BETA: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
# Server event types renamed in GA (beta name -> GA name).
SERVER_RENAMES = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "conversation.item.created": "conversation.item.added",
}
_RENAMES_TO_BETA = {ga: b for b, ga in SERVER_RENAMES.items()}
_CONTENT_TO_BETA = {"output_text": "text", "output_audio": "audio"}
_CONTENT_FROM_BETA = {"text": "output_text", "audio": "output_audio"}


def _format_to_beta(fmt: Any) -> Any:
    if isinstance(fmt, dict):
        return _FORMAT_TO_BETA.get(fmt.get("type", ""), fmt.get("type"))
    return fmt


def _format_from_beta(fmt: Any) -> Any:
    if isinstance(fmt, str) and fmt in _FORMAT_FROM_BETA:
        return dict(_FORMAT_FROM_BETA[fmt])
    return fmt


def _modalities_to_beta(mods: list[str]) -> list[str]:
    return ["text", "audio"] if "audio" in mods else ["text"]


def _modalities_from_beta(mods: Any) -> Any:
    if not isinstance(mods, list):
        return mods  # left for validation to reject
    return ["audio"] if "audio" in mods else ["text"]


# -- sessions --------------------------------------------------------------------------------


# Fields of GA sub-objects that the beta shapes do not have.
_BETA_FIELDS = {
    "turn_detection": ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                       "interrupt_response", "eagerness"),
    "input_audio_transcription": ("model", "language", "prompt"),
    "input_audio_noise_reduction": ("type",),
}


def _beta_sub(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: copy.deepcopy(v) for k, v in value.items() if k in _BETA_FIELDS[key]}
    return copy.deepcopy(value)


def _tool_choice_to_beta(choice: Any) -> Any:
    # Beta takes a string; forcing one function is the nearest thing to "required".
    return "required" if isinstance(choice, dict) else choice


def session_to_beta(session: dict[str, Any]) -> dict[str, Any]:
    """A GA session (config or resource) in the flat beta shape; GA-only fields are left out."""
    audio = session.get("audio") or {}
    inp = audio.get("input") or {}
    out = audio.get("output") or {}
    beta: dict[str, Any] = {k: session[k] for k in ("id", "object", "expires_at", "model") if k in session}
    if session.get("type") == "transcription":
        beta["modalities"] = ["text"]
    else:
        if "output_modalities" in session:
            beta["modalities"] = _modalities_to_beta(session["output_modalities"])
        for key in ("instructions", "tools", "tracing"):
            if key in session:
                beta[key] = copy.deepcopy(session[key])
        if "tool_choice" in session:
            beta["tool_choice"] = _tool_choice_to_beta(session["tool_choice"])
        if "voice" in out:
            beta["voice"] = out["voice"]
        if "format" in out:
            beta["output_audio_format"] = _format_to_beta(out["format"])
        if "speed" in out:
            beta["speed"] = out["speed"]
        if "max_output_tokens" in session:
            beta["max_response_output_tokens"] = session["max_output_tokens"]
        if "id" in session:  # a resource reports every field; an update sets only what it names
            beta.setdefault("temperature", 0.8)
    if "format" in inp:
        beta["input_audio_format"] = _format_to_beta(inp["format"])
    for ga_key, beta_key in (("transcription", "input_audio_transcription"), ("turn_detection", "turn_detection"),
                             ("noise_reduction", "input_audio_noise_reduction")):
        if ga_key in inp:
            beta[beta_key] = _beta_sub(beta_key, inp[ga_key])
    if "include" in session and session.get("type") == "transcription":
        beta["include"] = session["include"]
    return beta


def session_from_beta(beta: dict[str, Any], *, kind: str = "realtime") -> dict[str, Any]:
    """A flat beta session in the GA shape (`kind` says realtime or transcription)."""
    if beta.get("type") in ("realtime", "transcription") or "audio" in beta or "output_modalities" in beta:
        return copy.deepcopy(beta)  # already GA (only GA nests `audio` or names `output_modalities`)
    ga: dict[str, Any] = {"type": kind}
    for key in ("id", "object", "expires_at"):
        if key in beta:
            ga[key] = beta[key]
    inp: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if "input_audio_format" in beta:
        inp["format"] = _format_from_beta(beta["input_audio_format"])
    for beta_key, ga_key in (("input_audio_transcription", "transcription"), ("turn_detection", "turn_detection"),
                             ("input_audio_noise_reduction", "noise_reduction")):
        if beta_key in beta:
            inp[ga_key] = copy.deepcopy(beta[beta_key])
    if kind == "realtime":
        if "model" in beta:
            ga["model"] = beta["model"]
        if "modalities" in beta:
            ga["output_modalities"] = _modalities_from_beta(beta["modalities"])
        for key in ("instructions", "tools", "tool_choice", "tracing", "prompt"):
            if key in beta:
                ga[key] = copy.deepcopy(beta[key])
        if "voice" in beta:
            out["voice"] = beta["voice"]
        if "output_audio_format" in beta:
            out["format"] = _format_from_beta(beta["output_audio_format"])
        if "speed" in beta:
            out["speed"] = beta["speed"]
        if "max_response_output_tokens" in beta:
            ga["max_output_tokens"] = beta["max_response_output_tokens"]
    if "include" in beta:
        ga["include"] = beta["include"]
    audio: dict[str, Any] = {}
    if inp:
        audio["input"] = inp
    if out:
        audio["output"] = out
    if audio:
        ga["audio"] = audio
    return ga


# -- items and responses -------------------------------------------------------------------


def _item_content(item: Any, table: dict[str, str]) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get("content"), list):
        return item
    item = dict(item)
    item["content"] = [
        {**p, "type": table[p["type"]]}
        if isinstance(p, dict) and isinstance(p.get("type"), str) and p["type"] in table
        else p
        for p in item["content"]
    ]
    return item


def item_to_beta(item: Any) -> Any:
    return _item_content(item, _CONTENT_TO_BETA)


def item_from_beta(item: Any) -> Any:
    if isinstance(item, dict) and item.get("role") != "assistant":
        return item
    return _item_content(item, _CONTENT_FROM_BETA)


def response_to_beta(resp: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resp.items() if k not in ("audio", "output_modalities", "output")}
    if "output" in resp:
        out["output"] = [item_to_beta(i) for i in resp["output"]] if isinstance(resp["output"], list) else resp["output"]
    if "output_modalities" in resp:
        out["modalities"] = _modalities_to_beta(resp["output_modalities"])
    audio_out = (resp.get("audio") or {}).get("output") or {}
    if "voice" in audio_out:
        out["voice"] = audio_out["voice"]
    if "format" in audio_out:
        out["output_audio_format"] = _format_to_beta(audio_out["format"])
    out.setdefault("temperature", 0.8)
    usage = resp.get("usage")
    if isinstance(usage, dict):
        usage = copy.deepcopy(usage)
        details = usage.get("input_token_details") or {}
        details.pop("image_tokens", None)
        (details.get("cached_tokens_details") or {}).pop("image_tokens", None)
        out["usage"] = usage
    return out


def response_from_beta(resp: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resp.items()
           if k not in ("modalities", "voice", "output_audio_format", "temperature", "output")}
    if "output" in resp:
        out["output"] = [item_from_beta(i) for i in resp["output"]] if isinstance(resp["output"], list) else resp["output"]
    if "modalities" in resp:
        out["output_modalities"] = _modalities_from_beta(resp["modalities"])
    audio_out: dict[str, Any] = {}
    if "voice" in resp:
        audio_out["voice"] = resp["voice"]
    if "output_audio_format" in resp:
        audio_out["format"] = _format_from_beta(resp["output_audio_format"])
    if audio_out:
        out["audio"] = {"output": audio_out}
    return out


def _response_params_from_beta(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items()
           if k not in ("modalities", "voice", "output_audio_format", "temperature", "max_response_output_tokens",
                        "input")}
    if "modalities" in params and isinstance(params["modalities"], list):
        out["output_modalities"] = _modalities_from_beta(params["modalities"])
    audio_out: dict[str, Any] = {}
    if "voice" in params:
        audio_out["voice"] = params["voice"]
    if "output_audio_format" in params:
        audio_out["format"] = _format_from_beta(params["output_audio_format"])
    if audio_out:
        out["audio"] = {"output": audio_out}
    if "max_response_output_tokens" in params:
        out["max_output_tokens"] = params["max_response_output_tokens"]
    if isinstance(params.get("input"), list):
        out["input"] = [item_from_beta(i) for i in params["input"]]
    return out


def _response_params_to_beta(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items()
           if k not in ("output_modalities", "audio", "max_output_tokens", "input", "parallel_tool_calls",
                        "reasoning", "prompt")}
    if "tool_choice" in params:
        out["tool_choice"] = _tool_choice_to_beta(params["tool_choice"])
    if isinstance(params.get("output_modalities"), list):
        out["modalities"] = _modalities_to_beta(params["output_modalities"])
    audio_out = (params.get("audio") or {}).get("output") or {}
    if "voice" in audio_out:
        out["voice"] = audio_out["voice"]
    if "format" in audio_out:
        out["output_audio_format"] = _format_to_beta(audio_out["format"])
    if "max_output_tokens" in params:
        out["max_response_output_tokens"] = params["max_output_tokens"]
    if isinstance(params.get("input"), list):
        out["input"] = [item_to_beta(i) for i in params["input"]]
    return out


# -- events --------------------------------------------------------------------------------


def server_event_to_beta(event: dict[str, Any]) -> list[dict[str, Any]]:
    """A GA server event as the beta client expects it (zero or one events)."""
    kind = event.get("type", "")
    if kind == "conversation.item.done":
        return []  # beta announces an item once, with conversation.item.created
    out = dict(event)
    out["type"] = _RENAMES_TO_BETA.get(kind, kind)
    if kind == "response.function_call_arguments.done":
        out.pop("name", None)  # added to GA in 2026; beta clients read it from the output item
    if kind in ("session.created", "session.updated"):
        session = event["session"]
        out["session"] = session_to_beta(session)
        if session.get("type") == "transcription":
            out["type"] = "transcription_" + kind
    if isinstance(out.get("item"), dict):
        out["item"] = item_to_beta(out["item"])
    if isinstance(out.get("response"), dict):
        out["response"] = response_to_beta(out["response"])
    return [out]


def server_event_from_beta(event: dict[str, Any]) -> dict[str, Any]:
    kind = event.get("type", "")
    out = dict(event)
    out["type"] = SERVER_RENAMES.get(kind, kind)
    session = event.get("session")
    if kind.startswith("transcription_session."):
        out["type"] = kind.removeprefix("transcription_")
        if isinstance(session, dict):
            out["session"] = session_from_beta(session, kind="transcription")
    elif kind in ("session.created", "session.updated") and isinstance(session, dict):
        out["session"] = session_from_beta(session)
    if isinstance(out.get("item"), dict):
        out["item"] = item_from_beta(out["item"])
    if isinstance(out.get("response"), dict):
        out["response"] = response_from_beta(out["response"])
    return out


def client_event_from_beta(event: dict[str, Any]) -> dict[str, Any]:
    """A beta client event in GA shape; shapes it does not know are left for validation."""
    kind = event.get("type")
    out = dict(event)
    if kind == "transcription_session.update" and isinstance(event.get("session"), dict):
        out["type"] = "session.update"
        out["session"] = session_from_beta(event["session"], kind="transcription")
    elif kind == "session.update" and isinstance(event.get("session"), dict):
        out["session"] = session_from_beta(event["session"])
    elif kind == "response.create" and isinstance(event.get("response"), dict):
        out["response"] = _response_params_from_beta(event["response"])
    elif kind == "conversation.item.create" and isinstance(event.get("item"), dict):
        out["item"] = item_from_beta(event["item"])
    return out


def client_event_to_beta(event: dict[str, Any]) -> dict[str, Any]:
    kind = event.get("type")
    out = dict(event)
    if kind == "session.update" and isinstance(event.get("session"), dict):
        session = event["session"]
        out["session"] = session_to_beta(session)
        if session.get("type") == "transcription":
            out["type"] = "transcription_session.update"
    elif kind == "response.create" and isinstance(event.get("response"), dict):
        out["response"] = _response_params_to_beta(event["response"])
    elif kind == "conversation.item.create" and isinstance(event.get("item"), dict):
        out["item"] = item_to_beta(event["item"])
    return out
