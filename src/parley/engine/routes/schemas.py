"""OpenAPI pieces more than one router describes its bodies with (the routes read bodies with
`parley.http` and `parley.protocol`, which give OpenAI's error codes; these only say what they take)."""

from __future__ import annotations

from typing import Any

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input (malformed JSON, an invalid session or SDP offer)"},
    401: {"description": "No valid API key"},
    404: {"description": "No such call"},
    413: {"description": "Body too large"},
    415: {"description": "Unsupported media type"},
    422: {"description": "Invalid path parameter"},
}

GA_SESSION: dict[str, Any] = {
    "type": "object", "description": "The session config (GA shape); the key's calls start with it.",
    "required": ["type"],
    "properties": {"type": {"type": "string", "enum": ["realtime", "transcription"]}, "model": {"type": "string"},
                   "instructions": {"type": "string"}, "output_modalities": {"type": "array", "items": {"type": "string"}},
                   "audio": {"type": "object"}, "tools": {"type": "array", "items": {"type": "object"}},
                   "tool_choice": {}, "max_output_tokens": {}, "include": {"type": "array", "items": {"type": "string"}}},
}
