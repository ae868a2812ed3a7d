"""Parley's Python client for the OpenAI Realtime protocol (OpenAI, Parley's engine or server).

On `parley serve` (http://127.0.0.1:8000), which keeps the real key: the client gets a short-lived
key from the server's /api/session, for the agent the server configures (Sarah by default)::

    import asyncio

    from parley.client import RealtimeClient, server_key_provider


    async def main() -> None:
        server = "http://127.0.0.1:8000"
        async with RealtimeClient(base_url=server, key_provider=server_key_provider(server)) as client:
            client.on("message", lambda m: print(f"{m.role}: {m.text}"))
            await client.send_text("Hello!")
            await client.wait_for("response.done")


    asyncio.run(main())

On `parley engine --port 8001` (any non-empty key unless PARLEY_ENGINE_API_KEYS lists some) or on
OpenAI (`base_url="https://api.openai.com/v1"` with your key), a key and the session to use::

    import asyncio

    from parley.client import RealtimeClient


    async def main() -> None:
        async with RealtimeClient(base_url="http://127.0.0.1:8001", api_key="sk-local",
                                  session={"instructions": "Answer in one short sentence."}) as client:
            client.on("message", lambda m: print(f"{m.role}: {m.text}"))
            await client.send_text("Hello!")
            await client.wait_for("response.done")


    asyncio.run(main())

See `RealtimeClient` for the transports (WebSocket, WebRTC), reconnect and resume, tools,
usage and cost; `AudioPlayer` for WebSocket playback with barge-in; `ConnectionManager` for
several named connections (a transcription-only `speaker` feeding an assistant `mic`).
"""

from parley.client.client import RealtimeClient
from parley.client.conversation import Conversation, Item
from parley.client.events import (
    Audio,
    AudioDelta,
    Connected,
    Disconnected,
    ErrorEvent,
    Event,
    ItemEvent,
    KeyRefreshed,
    Message,
    Reconnected,
    Reconnecting,
    ResponseEvent,
    ServerEvent,
    SessionEvent,
    SpeakingStarted,
    SpeakingStopped,
    ToolCall,
    TranscriptDelta,
    TranscriptionCompleted,
)
from parley.client.keys import client_secret_provider, mint_client_secret, server_key_provider
from parley.client.manager import ConnectionManager, Injection
from parley.client.playback import AudioPlayer, sounddevice_available
from parley.client.policy import Key, ReconnectPolicy, TurnLatency, Usage
from parley.client.responses import ResponseHandle
from parley.client.subscriptions import EventStream
from parley.client.tools import Tool, ToolRegistry, function_schema
from parley.client.transport import (
    AuthenticationError,
    ConnectError,
    RealtimeError,
    Transport,
    TransportClosed,
    WebSocketTransport,
)

__all__ = [
    "Audio",
    "AudioDelta",
    "AudioPlayer",
    "AuthenticationError",
    "ConnectError",
    "Connected",
    "ConnectionManager",
    "Conversation",
    "Disconnected",
    "ErrorEvent",
    "Event",
    "EventStream",
    "Injection",
    "Item",
    "ItemEvent",
    "Key",
    "KeyRefreshed",
    "Message",
    "RealtimeClient",
    "RealtimeError",
    "ReconnectPolicy",
    "Reconnected",
    "Reconnecting",
    "ResponseEvent",
    "ResponseHandle",
    "ServerEvent",
    "SessionEvent",
    "SpeakingStarted",
    "SpeakingStopped",
    "Tool",
    "ToolCall",
    "ToolRegistry",
    "TranscriptDelta",
    "TranscriptionCompleted",
    "Transport",
    "TransportClosed",
    "TurnLatency",
    "Usage",
    "WebSocketTransport",
    "client_secret_provider",
    "function_schema",
    "mint_client_secret",
    "server_key_provider",
    "sounddevice_available",
]
