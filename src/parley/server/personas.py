"""The session configs the server sends for a persona (instructions, voice, tools, transcription, VAD)."""

from __future__ import annotations

from typing import Any, cast

from parley.apps.scenarios import Persona, UnknownPersonaError, get_persona
from parley.http.errors import ApiError

from .settings import ServerSettings

DEFAULT_PERSONA = "negotiator/sarah"


def find_persona(persona_id: str) -> Persona:
    from .copilot import PERSONAS

    if persona_id in PERSONAS:
        # The copilot's two connections stand where a scenario persona stands.
        return cast(Persona, PERSONAS[persona_id])
    try:
        return get_persona(persona_id)
    except UnknownPersonaError as exc:
        raise ApiError(400, f"{exc} or {', '.join(PERSONAS)}", "unknown_persona", param="persona") from None


def persona_session(persona: Persona, settings: ServerSettings, *, update: bool = False) -> dict[str, Any]:
    """The GA session config for `persona`: for a new key or call, or (update=True) a `session.update`."""
    from .copilot import CopilotPersona, session_for

    if isinstance(persona, CopilotPersona):
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


def handoff_note(old: Persona, new: Persona) -> str:
    """The short line the server adds to the conversation when it hands the call to `new`."""
    return (f"{old.name} has transferred this call to you. Greet the customer as {new.name} "
            f"({new.role.lower()}), say you have the context, and continue the negotiation.")
