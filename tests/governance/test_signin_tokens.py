"""The access tokens minted for Claude Code's sign-in (governance/signin_tokens.py)."""

from __future__ import annotations

import datetime as dt

import jwt

from governance import signin_tokens

KEY = signin_tokens.signing_key("", "test-secret")
ISSUER = signin_tokens.ISSUER
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def mint(**overrides: object) -> str:
    values: dict[str, object] = {
        "key_lookup_hash": "a" * 64,
        "subject": "idp|alice",
        "email": "alice@acme.dev",
        "groups": ("eng",),
        "issuer": ISSUER,
        "key": KEY,
        "now": dt.datetime.now(dt.UTC),
    }
    values.update(overrides)
    return signin_tokens.mint(**values)  # type: ignore[arg-type]


def test_a_minted_token_verifies_and_names_the_developers_key():
    claims = signin_tokens.verify(mint(), key=KEY, issuer=ISSUER)

    assert claims is not None
    assert (claims.key_lookup_hash, claims.subject, claims.groups) == (
        "a" * 64,
        "idp|alice",
        ("eng",),
    )


def test_expired_foreign_and_tampered_tokens_are_refused():
    expired = mint(now=NOW - dt.timedelta(days=1))
    foreign = mint(key=b"another signing key, 32 bytes or more")
    other_issuer = mint(issuer="someone-else")
    token = mint()
    header, payload, signature = token.split(".")
    tampered = ".".join((header, payload[:-2] + "AA", signature))
    unsigned = jwt.encode({"kh": "a" * 64, "sub": "x"}, key="", algorithm="none")

    for bad in (expired, foreign, other_issuer, tampered, unsigned, "not-a-jwt"):
        assert signin_tokens.verify(bad, key=KEY, issuer=ISSUER) is None


def test_the_signing_key_is_derived_unless_configured():
    assert signin_tokens.signing_key("configured", "s") == b"configured"
    assert signin_tokens.signing_key("", "s") != signin_tokens.signing_key("", "t")
