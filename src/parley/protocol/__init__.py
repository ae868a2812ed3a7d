"""The Realtime wire protocol as pure data: sessions, items, client and server events read and
written, the conversation they describe, beta translation, errors and pricing. Nothing here does
I/O."""

from . import beta, changes, events, ids, items
from .client_events import CLIENT_EVENT_TYPES, ClientEvent, Invalid, parse_client_event
from .conversation import ConversationState, Item, Response
from .errors import ProtocolError, error_event
from .pricing import DEFAULT_TABLE, PriceTable, response_cost
from .server_events import InvalidServerEvent, ServerEvent, read_server_event
from .session import (
    RealtimeSessionConfig,
    SessionConfig,
    TranscriptionSessionConfig,
    merge_session,
    parse_session,
    session_resource,
)

__all__ = [
    "CLIENT_EVENT_TYPES",
    "DEFAULT_TABLE",
    "ClientEvent",
    "ConversationState",
    "Invalid",
    "InvalidServerEvent",
    "Item",
    "PriceTable",
    "ProtocolError",
    "RealtimeSessionConfig",
    "Response",
    "ServerEvent",
    "SessionConfig",
    "TranscriptionSessionConfig",
    "beta",
    "changes",
    "error_event",
    "events",
    "ids",
    "items",
    "merge_session",
    "parse_client_event",
    "parse_session",
    "read_server_event",
    "response_cost",
    "session_resource",
]
