"""Talking to a realtime endpoint from tests through the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from support.conformance import validate_server_event


async def recv_event(conn: Any, timeout: float = 30.0, *, beta: bool = False) -> dict[str, Any]:
    """The next server event as raw JSON, strictly validated against the SDK's model for its type."""
    raw = await asyncio.wait_for(conn.recv_bytes(), timeout)
    event: dict[str, Any] = json.loads(raw)
    validate_server_event(event, beta=beta)
    return event


async def collect_until(
    conn: Any, stop: Callable[[dict[str, Any]], bool], timeout: float = 60.0, *, beta: bool = False
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"gave up after {[e['type'] for e in events]}")
        event = await recv_event(conn, left, beta=beta)
        events.append(event)
        if stop(event):
            return events


def is_type(*types: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] in types


async def stream_pcm(conn: Any, pcm: np.ndarray, *, chunk_ms: int = 20, speed: float = 1.0) -> None:
    """Append audio as a microphone would: `chunk_ms` at a time, paced in real time / `speed`."""
    step = SAMPLE_RATE * chunk_ms // 1000
    start = time.monotonic()
    for i, offset in enumerate(range(0, pcm.size, step)):
        chunk = float_to_pcm16(pcm[offset : offset + step])
        await conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
        delay = start + (i + 1) * chunk_ms / 1000 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def audio_of(events: list[dict[str, Any]], response_id: str | None = None) -> np.ndarray:
    chunks = [np.frombuffer(base64.b64decode(e["delta"]), dtype="<i2") for e in events
              if e["type"] == "response.output_audio.delta" and response_id in (None, e["response_id"])]
    return (np.concatenate(chunks).astype(np.float32) / 32768) if chunks else np.zeros(0, np.float32)
