"""Where call recordings are kept: an interface, and a directory (the default).

A directory rather than the database: a recording is up to PARLEY_MAX_AUDIO_BYTES (32 MB) of audio
that is written once and read rarely. As files they stream from disk (with range requests, so the
history page can seek) and stay out of the database's tables, WAL and backups. With N processes the
directory is one they all mount (a volume, NFS): PARLEY_RECORDINGS_DIR, required in shared mode.
Another store (an object store) implements the same three methods.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

AUDIO_TYPES = {"audio/webm": "webm", "audio/ogg": "ogg", "audio/wav": "wav", "audio/mp4": "m4a"}


@dataclass(frozen=True)
class StoredRecording:
    path: Path
    media_type: str


class Recordings(Protocol):
    async def save(self, call_id: str, media_type: str, data: bytes) -> None: ...

    async def find(self, call_id: str) -> StoredRecording | None: ...

    async def delete(self, call_id: str) -> None: ...


class DirectoryRecordings:
    """`<dir>/<call id>.<ext>`, each written to a temporary name and renamed into place, so a
    process serving it never sees half a file (rename is atomic on one file system, NFS too)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _find(self, call_id: str) -> StoredRecording | None:
        for media_type, ext in AUDIO_TYPES.items():
            path = self.folder / f"{call_id}.{ext}"
            if path.is_file():
                return StoredRecording(path, media_type)
        return None

    def _save(self, call_id: str, media_type: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{call_id}.{AUDIO_TYPES[media_type]}"
        partial = self.folder / f".{call_id}.{secrets.token_hex(4)}.part"
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for ext in AUDIO_TYPES.values():  # a new upload replaces one of another type
            other = self.folder / f"{call_id}.{ext}"
            if other != target:
                other.unlink(missing_ok=True)
        os.replace(partial, target)

    async def save(self, call_id: str, media_type: str, data: bytes) -> None:
        await asyncio.to_thread(self._save, call_id, media_type, data)

    async def find(self, call_id: str) -> StoredRecording | None:
        return await asyncio.to_thread(self._find, call_id)

    async def delete(self, call_id: str) -> None:
        found = await self.find(call_id)
        if found is not None:
            await asyncio.to_thread(found.path.unlink, True)
