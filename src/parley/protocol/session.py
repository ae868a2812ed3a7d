"""The GA session configuration as pydantic models, with OpenAI's defaults and validation.

`RealtimeSessionConfig` and `TranscriptionSessionConfig` are what a client may set (through
`client_secrets`, `calls` or `session.update`); `session_resource()` adds the server-side
fields (`id`, `object`, `expires_at`) for `session.created` / `session.updated`.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ProtocolError, from_validation_error

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
DEFAULT_INSTRUCTIONS = (
    "You are a helpful, witty, and friendly AI. Act like a human, but remember that you aren't a "
    "human and that you can't do human things in the real world. Keep your answers short and "
    "spoken, and talk quickly."
)
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")


class _Strict(BaseModel):
    # OpenAI rejects unknown parameters with `unknown_parameter`; so do we.
    # strict: "1420" is not an integer and true is not a number, as on OpenAI's service
    model_config = ConfigDict(extra="forbid", strict=True)


# -- audio formats -------------------------------------------------------------------------

_BETA_FORMATS: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
    "audio/pcm": {"type": "audio/pcm", "rate": 24000},
    "audio/pcmu": {"type": "audio/pcmu"},
    "audio/pcma": {"type": "audio/pcma"},
}


def _format_from_string(value: Any) -> Any:
    # The spec's own examples put the beta string form inside GA sessions; accept it.
    if isinstance(value, str) and value in _BETA_FORMATS:
        return dict(_BETA_FORMATS[value])
    return value


class PcmFormat(_Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


class PcmuFormat(_Strict):
    type: Literal["audio/pcmu"] = "audio/pcmu"


class PcmaFormat(_Strict):
    type: Literal["audio/pcma"] = "audio/pcma"


AudioFormat = Annotated[
    PcmFormat | PcmuFormat | PcmaFormat,
    Field(discriminator="type"),
    BeforeValidator(_format_from_string),
]


# -- input ---------------------------------------------------------------------------------


class NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] = "near_field"
    strength: float | None = Field(default=None, ge=0.0, le=1.0)


class Transcription(_Strict):
    model: str | None = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    languages: list[str] | None = None
    keywords: list[str] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class ServerVad(_Strict):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10_000)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(default=None, ge=5_000, le=30_000)


class SemanticVad(_Strict):
    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class AudioInput(_Strict):
    format: AudioFormat = Field(default_factory=PcmFormat)
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = Field(default_factory=ServerVad)


class CustomVoice(_Strict):
    id: str


class AudioOutput(_Strict):
    format: AudioFormat = Field(default_factory=PcmFormat)
    voice: str | CustomVoice = DEFAULT_VOICE
    speed: float = Field(default=1.0, ge=0.25, le=1.5)


class AudioConfig(_Strict):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput = Field(default_factory=AudioOutput)


# -- tools and the rest --------------------------------------------------------------------


class FunctionTool(_Strict):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class McpTool(BaseModel):
    # MCP tools are passed through (the local engine does not call MCP servers).
    model_config = ConfigDict(extra="allow")
    type: Literal["mcp"] = "mcp"
    server_label: str


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class ToolChoiceFunction(_Strict):
    type: Literal["function"] = "function"
    name: str


class ToolChoiceMcp(_Strict):
    type: Literal["mcp"] = "mcp"
    server_label: str
    name: str | None = None


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[ToolChoiceFunction | ToolChoiceMcp, Field(discriminator="type")]
)


class TokenLimits(_Strict):
    post_instructions: int | None = Field(default=None, ge=0)


class RetentionRatioTruncation(_Strict):
    type: Literal["retention_ratio"] = "retention_ratio"
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimits | None = None


Truncation = Literal["auto", "disabled"] | RetentionRatioTruncation


class Prompt(_Strict):
    id: str
    version: str | None = None
    variables: dict[str, Any] | None = None


class TracingConfig(_Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: Any = None


class Reasoning(_Strict):
    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


MaxOutputTokens = Annotated[int, Field(ge=1, le=32_768)] | Literal["inf"]
Modality = Literal["text", "audio"]


def one_modality(value: list[Modality]) -> list[Modality]:
    if not value:
        raise ValueError("output_modalities must name 'audio' or 'text'")
    if len(set(value)) > 1:
        # GA allows one output modality; audio always comes with its transcript.
        return ["audio"]
    return list(dict.fromkeys(value))


def _audio_only() -> list[Modality]:
    return ["audio"]


class RealtimeSessionConfig(_Strict):
    type: Literal["realtime"] = "realtime"
    model: str = DEFAULT_MODEL
    instructions: str = DEFAULT_INSTRUCTIONS
    output_modalities: list[Modality] = Field(default_factory=_audio_only)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    max_output_tokens: MaxOutputTokens = "inf"
    truncation: Truncation = "auto"
    prompt: Prompt | None = None
    tracing: Literal["auto"] | TracingConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None

    @model_validator(mode="after")
    def _check(self) -> RealtimeSessionConfig:
        self.output_modalities = one_modality(list(self.output_modalities))
        return self


class TranscriptionAudioInput(_Strict):
    format: AudioFormat = Field(default_factory=PcmFormat)
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = Field(default_factory=Transcription)
    turn_detection: TurnDetection | None = Field(default_factory=ServerVad)


class TranscriptionAudio(_Strict):
    input: TranscriptionAudioInput = Field(default_factory=TranscriptionAudioInput)


class TranscriptionSessionConfig(_Strict):
    type: Literal["transcription"] = "transcription"
    audio: TranscriptionAudio = Field(default_factory=TranscriptionAudio)
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


SessionConfig = RealtimeSessionConfig | TranscriptionSessionConfig

# Fields the SDK's session resource does not have; sent only when a client set them.
_OMIT_WHEN_NONE = ("parallel_tool_calls", "reasoning")


def parse_session(data: Any, *, param: str = "session") -> SessionConfig:
    """A complete session config from a client (missing fields take defaults)."""
    if not isinstance(data, dict):
        raise ProtocolError("invalid_type", f"Invalid type for '{param}': expected an object.", param)
    kind = data.get("type")
    if kind is None:
        raise ProtocolError("missing_required_parameter", f"Missing required parameter: '{param}.type'.",
                            f"{param}.type")
    model: type[RealtimeSessionConfig] | type[TranscriptionSessionConfig]
    if kind == "realtime":
        model = RealtimeSessionConfig
    elif kind == "transcription":
        model = TranscriptionSessionConfig
    else:
        raise ProtocolError(
            "invalid_value",
            f"Invalid value: {kind!r}. Supported values are: 'realtime' and 'transcription'.",
            f"{param}.type",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix=param) from None


def merge_config(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`patch` applied to `base` as `session.update` applies it (both plain dicts; a new one back)."""
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        # Objects merge field by field unless their `type` changes (then the new one replaces it);
        # lists and scalars replace; an explicit null clears.
        if isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type"):
            out[key] = merge_config(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_session(current: SessionConfig, patch: Any) -> SessionConfig:
    """Apply a partial `session.update` to the effective session."""
    if not isinstance(patch, dict):
        raise ProtocolError("invalid_type", "Invalid type for 'session': expected an object.", "session")
    if "type" not in patch:
        raise ProtocolError("missing_required_parameter", "Missing required parameter: 'session.type'.",
                            "session.type")
    if patch["type"] != current.type:
        if patch["type"] not in ("realtime", "transcription"):
            parse_session(patch)  # raises the precise error
        raise ProtocolError(
            "invalid_value",
            f"Cannot change the session type from '{current.type}' to '{patch['type']}'.",
            "session.type",
        )
    merged = merge_config(current.model_dump(mode="json"), patch)
    return parse_session(merged)


def session_resource(config: SessionConfig, *, id: str, expires_at: int) -> dict[str, Any]:
    """The session as the server reports it in `session.created` / `session.updated`."""
    body = config.model_dump(mode="json")
    for key in _OMIT_WHEN_NONE:
        if body.get(key) is None:
            body.pop(key, None)
    turn = body["audio"]["input"].get("turn_detection")
    if config.type == "transcription" and turn and turn["type"] == "server_vad":
        # A transcription session's resource reports server_vad with these fields only (the SDK's
        # RealtimeTranscriptionSessionTurnDetection); the response-related ones do not apply.
        body["audio"]["input"]["turn_detection"] = {
            k: turn[k] for k in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")}
    obj = "realtime.session" if config.type == "realtime" else "realtime.transcription_session"
    return {"type": config.type, "object": obj, "id": id, "expires_at": expires_at, **body}
