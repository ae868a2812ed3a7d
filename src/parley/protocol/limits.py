"""The protocol's limits and caps, one place for each (docs/protocol.md, section 7.10).

OpenAI documents an append as "up to 15 MiB per event" without saying whether of audio or of
JSON. The engine accepts 15 MiB of decoded audio in one append; the client sends pieces whose
whole event stays under 15 MiB, so it is within either reading.
"""

from __future__ import annotations

MAX_APPEND_BYTES = 15 * 1024 * 1024
# The largest client event a session reads: one maximal append, base64-encoded, with room for its
# envelope. A larger one is an `error` event (the session goes on).
MAX_EVENT_BYTES = MAX_APPEND_BYTES * 4 // 3 + 64 * 1024
# A session's lifetime cap on OpenAI's GA service.
MAX_SESSION_SECONDS = 60 * 60
MIN_COMMIT_MS = 100
MAX_EVENT_ID_CHARS = 512
MAX_METADATA_PAIRS = 16
CLIENT_SECRET_TTL_SECONDS = (10, 7200)
CLIENT_SECRET_TTL_DEFAULT = 600
