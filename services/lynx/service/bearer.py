"""The one reading of ``Authorization: Bearer <token>``: the gateway's API keys and the budget controller's lease token
are presented the same way."""

from __future__ import annotations


def bearer_token(authorization: str | None) -> str | None:
    """The token an ``Authorization: Bearer <token>`` header presents (None: no such header, or an empty token)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
