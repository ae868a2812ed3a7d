"""The `Authorization: Bearer <token>` header (RFC 6750; the scheme is case-insensitive)."""

from __future__ import annotations


def bearer_token(header: str | None) -> str | None:
    """The token of a Bearer header; None when the header is absent, another scheme, or empty."""
    if not header or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None
