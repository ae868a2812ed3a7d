"""Cutting streamed reply text into pieces worth speaking.

TTS starts on the first clause, not the whole reply: the first piece is cut as early as a
comma or a few words allow, later ones at sentence ends, so speech starts fast and flows.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?;:](?=\s)|\n")
_CLAUSE_END = re.compile(r"[,.!?;:](?=\s)|\n")
FIRST_PIECE_WORDS = 6


class Segmenter:
    def __init__(self) -> None:
        self._pending = ""
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        self._pending += text
        pieces: list[str] = []
        while True:
            pattern = _CLAUSE_END if self._emitted == 0 else _SENTENCE_END
            match = pattern.search(self._pending)
            if match is None and self._emitted == 0:
                words = self._pending.split(" ")
                # A long first clause: start speaking after a few words, at a word boundary.
                if len(words) > FIRST_PIECE_WORDS + 1:
                    cut = len(" ".join(words[:FIRST_PIECE_WORDS]))
                    pieces.append(self._pending[:cut].strip())
                    self._pending = self._pending[cut:]
                    self._emitted += 1
                    continue
            if match is None:
                break
            cut = match.end()
            piece = self._pending[:cut].strip()
            self._pending = self._pending[cut:]
            if piece:
                pieces.append(piece)
                self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        piece = self._pending.strip()
        self._pending = ""
        return [piece] if piece else []
