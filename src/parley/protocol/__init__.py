"""The Realtime wire protocol as pure data: sessions, items, client and server events, beta
translation, errors and pricing. Nothing here does I/O."""

from . import beta, events, ids, items
from .client_events import CLIENT_EVENT_TYPES, ClientEvent, Invalid, parse_client_event
from .errors import ProtocolError, error_event
from .pricing import DEFAULT_TABLE, PriceTable, response_cost
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
    "Invalid",
    "PriceTable",
    "ProtocolError",
    "RealtimeSessionConfig",
    "SessionConfig",
    "TranscriptionSessionConfig",
    "beta",
    "error_event",
    "events",
    "ids",
    "items",
    "merge_session",
    "parse_client_event",
    "parse_session",
    "response_cost",
    "session_resource",
]
