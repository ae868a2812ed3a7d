"""Who a call speaks with: a scenario persona or one of the copilot's connections, and the session
configs the server sends for them (instructions, voice, tools, transcription, VAD)."""

from __future__ import annotations

from typing import Any

from parley.apps.scenarios import Persona, UnknownPersonaError, get_persona
from parley.http.errors import ApiError

from .copilot import PERSONAS as COPILOT
from .copilot import CopilotConnection, session_for
from .settings import ServerSettings

DEFAULT_PERSONA = "negotiator/sarah"

# The identity a call is started with and recorded under (the call row's `persona`).
CallPersona = Persona | CopilotConnection


def find_persona(persona_id: str) -> CallPersona:
    if persona_id in COPILOT:
        return COPILOT[persona_id]
    try:
        return get_persona(persona_id)
    except UnknownPersonaError as exc:
        raise ApiError(400, f"{exc} or {', '.join(COPILOT)}", "unknown_persona", param="persona") from None


def persona_session(persona: CallPersona, settings: ServerSettings, *, update: bool = False) -> dict[str, Any]:
    """The GA session config for `persona`: for a new key or call, or (update=True) a `session.update`."""
    if isinstance(persona, CopilotConnection):
        return session_for(persona, settings)
    cfg = persona.session_config()
    transcription: dict[str, Any] = {"model": settings.transcription_model}
    if settings.transcription_language:
        transcription["language"] = settings.transcription_language
    output = dict(cfg.get("audio", {}).get("output") or {})
    cfg["audio"] = {
        "input": {"transcription": transcription,
                  "turn_detection": {"type": "server_vad", "silence_duration_ms": settings.vad_silence_ms}},
        "output": output,
    }
    if not update:
        cfg["model"] = settings.model
    return cfg
