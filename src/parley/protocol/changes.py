"""What one server event changed in a conversation: the records `ConversationState.apply` returns.

Each is frozen and names its `kind` ("item_completed", ...). The browser client (`web/parley.js`)
reports the same kinds, so a reader of either sees one vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .records import Item, Response


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """`session.created|updated`: the session as the server now reports it."""

    session: dict[str, Any]
    kind: ClassVar[str] = "session_changed"


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str | None
    audio_start_ms: int | None
    kind: ClassVar[str] = "speech_started"


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str | None
    audio_end_ms: int | None
    kind: ClassVar[str] = "speech_stopped"


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """The input buffer became the user item `item_id` (by VAD, a client commit or a timeout)."""

    item_id: str
    previous_item_id: str | None
    kind: ClassVar[str] = "input_committed"


@dataclass(frozen=True, slots=True)
class InputCleared:
    kind: ClassVar[str] = "input_cleared"


@dataclass(frozen=True, slots=True)
class ItemPlaced:
    """A new item: in the conversation after `previous_item_id`, or (`item.out_of_band`) in an
    out-of-band response only."""

    item: Item
    previous_item_id: str | None
    kind: ClassVar[str] = "item_placed"


@dataclass(frozen=True, slots=True)
class ItemCompleted:
    """An item is finished with its words (`text`); again, with `first` false, when its words change
    later (a user's transcript after all, a better transcription pass). `usage` is the transcription's
    when a transcript completed it."""

    item: Item
    text: str
    first: bool
    usage: dict[str, Any] | None = None
    kind: ClassVar[str] = "item_completed"


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """More words of an item (a user's transcription or the assistant's text/transcript)."""

    item: Item
    delta: str
    kind: ClassVar[str] = "transcript_delta"


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    """An assistant item cut at `audio_end_ms`; `heard` is the best knowledge of the words heard."""

    item_id: str
    audio_end_ms: int
    heard: str
    said: str
    kind: ClassVar[str] = "item_truncated"


@dataclass(frozen=True, slots=True)
class ItemRetrieved:
    """`conversation.item.retrieved`: the server's copy (`wire`, audio included when it sent it)."""

    item: Item | None
    wire: dict[str, Any]
    kind: ClassVar[str] = "item_retrieved"


@dataclass(frozen=True, slots=True)
class ItemDeleted:
    item_id: str
    kind: ClassVar[str] = "item_deleted"


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response: Response
    kind: ClassVar[str] = "response_started"


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A response ended (`status`: completed, cancelled, failed, incomplete) with its `usage`."""

    response: Response
    status: str
    status_details: dict[str, Any] | None
    usage: dict[str, Any] | None
    output: tuple[Item, ...]
    kind: ClassVar[str] = "response_done"


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """Assistant audio in an event (WebSocket): `delta` is the base64, `ms` its duration."""

    response_id: str | None
    item_id: str | None
    delta: str
    ms: float
    kind: ClassVar[str] = "audio_received"


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """WebRTC/SIP: the server's output buffer started playing a response."""

    response_id: str | None
    item_id: str | None
    kind: ClassVar[str] = "playback_started"


@dataclass(frozen=True, slots=True)
class PlaybackStopped:
    """WebRTC/SIP: the output buffer drained (`cleared` false) or was cleared."""

    response_id: str | None
    cleared: bool
    kind: ClassVar[str] = "playback_stopped"


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    code: str | None
    message: str
    param: str | None
    client_event_id: str | None
    type: str | None
    kind: ClassVar[str] = "error_received"


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """Something that was not a server event, or an event whose fields make no sense."""

    reason: str
    kind: ClassVar[str] = "invalid_event"


Change = (SessionChanged | SpeechStarted | SpeechStopped | InputCommitted | InputCleared | ItemPlaced
          | ItemCompleted | TranscriptDelta | ItemTruncated | ItemRetrieved | ItemDeleted | ResponseStarted
          | ResponseDone | AudioReceived | PlaybackStarted | PlaybackStopped | ErrorReceived | InvalidEvent)

CHANGE_KINDS = tuple(cls.kind for cls in (
    SessionChanged, SpeechStarted, SpeechStopped, InputCommitted, InputCleared, ItemPlaced, ItemCompleted,
    TranscriptDelta, ItemTruncated, ItemRetrieved, ItemDeleted, ResponseStarted, ResponseDone, AudioReceived,
    PlaybackStarted, PlaybackStopped, ErrorReceived, InvalidEvent))
