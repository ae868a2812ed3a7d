"""Token counts the local engine reports in usage, estimated from text (it has no tokenizer)."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """About four characters a token, as OpenAI's tokenizers average on English."""
    return (len(text) + 3) // 4
