"""Signed session cookies and the CSRF tokens bound to them (pure: the key and the clock are passed in).

A session is its JSON payload and an HMAC-SHA256 of it under the server's key: a client can read it (it holds no
secret, only who signed in and until when) but cannot forge or extend it. The key is derived from the admin token,
so that replacing the token ends every session with it and no second secret has to be kept.

A CSRF token is an HMAC of the session's random nonce (of the sign-in form's cookie before one signs in) under the
same key (a synchronizer token that needs no server-side store): a form posted from another site cannot know it, and
a token from another session does not fit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Literal

Role = Literal["admin", "tenant"]
ADMIN_SUBJECT = "admin"


@dataclass(frozen=True)
class Session:
    role: Role
    subject: str  # "admin", or the tenant id of a tenant owner
    expires_at: float  # unix seconds
    nonce: str
    # A tenant owner's: the first characters of the SHA-256 of the key it signed in with, so that a replaced or
    # removed key ends its sessions (the admin's end when the admin token changes: it is their key).
    key_fingerprint: str = ""

    @staticmethod
    def fresh_nonce() -> str:
        return secrets.token_urlsafe(16)

    def may_see(self, tenant: str) -> bool:
        """A tenant owner sees its own tenant only; the admin every tenant."""
        return self.role == "admin" or self.subject == tenant


def session_key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), b"lynx-console-session", hashlib.sha256).digest()


def new_session(role: Role, subject: str, now: float, lifetime_seconds: float, key_fingerprint: str = "") -> Session:
    return Session(role, subject, now + lifetime_seconds, Session.fresh_nonce(), key_fingerprint)


def _mac(key: bytes, message: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode().rstrip("=")


def sign(session: Session, key: bytes) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(asdict(session), separators=(",", ":")).encode()).decode()
    return f"{payload}.{_mac(key, payload.encode())}"


def verify(cookie: str | None, key: bytes, now: float) -> Session | None:
    """The session the cookie carries; None when it is missing, tampered with, signed with another key or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(key, payload.encode())):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        session = Session(role=data["role"], subject=data["subject"], expires_at=float(data["expires_at"]),
                          nonce=data["nonce"], key_fingerprint=str(data.get("key_fingerprint", "")))
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    if session.role not in ("admin", "tenant") or now >= session.expires_at:
        return None
    return session


def csrf_token(nonce: str, key: bytes) -> str:
    """The token a form of the session with ``nonce`` carries (or of the sign-in form, bound to its own cookie)."""
    return _mac(key, f"csrf:{nonce}".encode())


def csrf_valid(nonce: str, key: bytes, token: str | None) -> bool:
    return bool(nonce) and bool(token) and hmac.compare_digest(token.encode(), csrf_token(nonce, key).encode())


class SignedOut:
    """The sessions signed out before they expire (a cookie stays valid until then, however the browser deletes it):
    their nonces, each kept until its session would have expired. In the process' memory: one controller replica
    serves the console, and a restart forgets them (the admin token's rotation ends every session)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def add(self, session: Session) -> None:
        self._until[session.nonce] = session.expires_at

    def holds(self, session: Session, now: float) -> bool:
        self._until = {nonce: until for nonce, until in self._until.items() if until > now}
        return session.nonce in self._until
