"""Session cookies and CSRF tokens: signed, bound, expiring."""

from __future__ import annotations

from lynx_budget.console.sessions import csrf_token, csrf_valid, new_session, session_key, sign, verify

KEY = session_key("admin-token")
NOW = 1_800_000_000.0


def test_a_signed_session_reads_back_until_it_expires():
    session = new_session("tenant", "acme", NOW, 3600)
    cookie = sign(session, KEY)
    assert verify(cookie, KEY, NOW + 3599) == session
    assert verify(cookie, KEY, NOW + 3600) is None


def test_a_tampered_or_foreign_cookie_is_no_session():
    cookie = sign(new_session("tenant", "acme", NOW, 3600), KEY)
    payload, mac = cookie.split(".")
    admin_payload = sign(new_session("admin", "admin", NOW, 3600), KEY).split(".")[0]
    assert verify(f"{admin_payload}.{mac}", KEY, NOW) is None  # a tenant's signature on an admin payload
    assert verify(cookie, session_key("another-token"), NOW) is None  # the admin token was replaced
    for broken in ("", "no-dot", "a.b.c", f"{payload}.", f"!!!.{mac}"):
        assert verify(broken, KEY, NOW) is None


def test_a_tenant_session_sees_its_own_tenant_only():
    assert new_session("tenant", "acme", NOW, 60).may_see("acme")
    assert not new_session("tenant", "acme", NOW, 60).may_see("globex")
    assert new_session("admin", "admin", NOW, 60).may_see("globex")


def test_a_csrf_token_fits_its_own_session_only():
    one, other = new_session("admin", "admin", NOW, 60), new_session("admin", "admin", NOW, 60)
    token = csrf_token(one.nonce, KEY)
    assert csrf_valid(one.nonce, KEY, token)
    assert not csrf_valid(other.nonce, KEY, token)
    assert not csrf_valid(one.nonce, session_key("another-token"), token)
    assert not csrf_valid(one.nonce, KEY, None) and not csrf_valid(one.nonce, KEY, "")
    assert not csrf_valid("", KEY, csrf_token("", KEY))  # no sign-in cookie: no valid token either


def test_a_signed_out_session_is_held_until_it_would_have_expired():
    from lynx_budget.console.sessions import SignedOut
    session, other = new_session("admin", "admin", NOW, 60), new_session("admin", "admin", NOW, 60)
    signed_out = SignedOut()
    signed_out.add(session)
    assert signed_out.holds(session, NOW + 1) and not signed_out.holds(other, NOW + 1)
    assert not signed_out.holds(session, NOW + 61)  # expired: verify() refuses it anyway, and it is forgotten


def test_a_tenant_session_carries_its_keys_fingerprint_through_the_cookie():
    cookie = sign(new_session("tenant", "acme", NOW, 3600, "0123456789abcdef"), KEY)
    assert verify(cookie, KEY, NOW + 1).key_fingerprint == "0123456789abcdef"
