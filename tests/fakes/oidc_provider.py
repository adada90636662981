"""A local OpenID Connect provider (identity provider) on 127.0.0.1, for single sign-on tests.

A real HTTP server (aiohttp, in a thread of its own) that speaks the wire protocol an IdP
speaks, strictly: discovery, JWKS (RS256 keys generated at start), the authorization code flow
with PKCE S256, state and nonce, refresh tokens, userinfo and revocation. The admin SSO tests
drive it through the gateway's browser flow; the Claude Code sign-in (issue 12) reuses it for
the browser leg of its device flow.

Usage::

    with FakeOIDCProvider() as idp:                       # or idp = FakeOIDCProvider().start()
        idp.add_client("gateway", "s3cret", [gateway_url + "/sso/callback/"])
        idp.add_user("u-1", email="ada@example.com", groups=["platform"])
        idp.sign_in_as("u-1")                             # auto-approve as this user
        ...                                               # GATEWAY_OIDC_ISSUER = idp.issuer
        idp.user("u-1").groups = ["finance"]              # change the IdP's answer mid-test
        idp.user("u-1").active = False                    # deprovisioned at the IdP

Endpoints (all under `issuer`):

- `GET /.well-known/openid-configuration`: the discovery document (`document_overrides`
  replaces or removes (value None) fields, to test a client's checks).
- `GET /jwks`: the public keys; `rotate_keys()` adds a new signing key and keeps the old one
  published, as providers do during a rotation.
- `GET /authorize`: checks client_id, redirect_uri (exactly as registered; otherwise 400,
  never a redirect), response_type=code, scope with openid, state, nonce and code_challenge
  with method S256 (each refusal is an RFC 6749 error redirected to the client with its state).
  It then approves as the `sign_in_as` user, or, with none set, shows a login form that
  `POST /authorize` answers (field `username`: a user's sub or email). `deny_next()` makes
  the next authorization answer `error=access_denied`; an inactive user is denied too.
- `POST /token`: `authorization_code` (client secret by HTTP Basic or in the form; the code
  single-use, bound to the client and redirect_uri, and the `code_verifier` checked against
  the challenge) and `refresh_token` (rotating: a used refresh token is refused, and so is
  any token of a user made inactive). Answers an ID token (RS256: iss, sub, aud, azp, exp,
  iat, auth_time, nonce, email, names, groups), an opaque access token and, when the scope
  has offline_access (or `always_refresh`), a refresh token. Errors are RFC 6749 JSON.
- `GET|POST /userinfo`: the user's current claims for a live access token (else 401).
- `POST /revoke`: RFC 7009; always 200.

Groups go in the ID token and the userinfo answer under `groups_claim` (a dotted name nests
them: "realm_access.roles"); `groups_in` limits them to one of the two. Every request is in
`received` (client secrets left out), for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

GroupsIn = Literal["both", "id_token", "userinfo"]


@dataclass
class OIDCUser:
    sub: str
    email: str = ""
    groups: list[str] = field(default_factory=list)
    given_name: str = ""
    family_name: str = ""
    email_verified: bool = True
    active: bool = True  # False: authorizations denied, refresh and userinfo refused
    extra_claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class OIDCClient:
    client_id: str
    client_secret: str | None  # None: a public client (PKCE only, no secret)
    redirect_uris: list[str]


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]  # client_secret removed
    client_auth: str = ""  # "basic", "post" or "" (token and revocation requests)


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    sub: str
    scope: str
    nonce: str
    code_challenge: str
    expires_at: float
    used: bool = False


@dataclass
class _Token:
    client_id: str
    sub: str
    scope: str
    expires_at: float


@dataclass
class _Key:
    kid: str
    private: rsa.RSAPrivateKey

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(description or error)
        self.error = error
        self.description = description
        self.status = status


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode([*urllib.parse.parse_qsl(parts.query), *params.items()])
    return urllib.parse.urlunsplit(parts._replace(query=query))


class FakeOIDCProvider:
    def __init__(
        self,
        *,
        groups_claim: str = "groups",
        groups_in: GroupsIn = "both",
        require_pkce: bool = True,
        require_nonce: bool = True,
        require_state: bool = True,
        always_refresh: bool = False,
        id_token_seconds: int = 300,
        access_token_seconds: int = 600,
        refresh_token_seconds: int = 86_400,
        code_seconds: int = 60,
    ) -> None:
        self.groups_claim = groups_claim
        self.groups_in = groups_in
        self.require_pkce = require_pkce
        self.require_nonce = require_nonce
        self.require_state = require_state
        self.always_refresh = always_refresh
        self.id_token_seconds = id_token_seconds
        self.access_token_seconds = access_token_seconds
        self.refresh_token_seconds = refresh_token_seconds
        self.code_seconds = code_seconds
        self.document_overrides: dict[str, Any] = {}
        self.received: list[Received] = []
        self.clients: dict[str, OIDCClient] = {}
        self.users: dict[str, OIDCUser] = {}
        self.keys = [self._new_key()]
        self.auto_user: str | None = None
        self.port = 0
        self._denials: list[str] = []
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- configuration (from the test's thread) --------------------------------------------

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_client(
        self, client_id: str, client_secret: str | None, redirect_uris: list[str]
    ) -> OIDCClient:
        client = OIDCClient(client_id, client_secret, list(redirect_uris))
        with self._lock:
            self.clients[client_id] = client
        return client

    def add_user(self, sub: str, **claims: Any) -> OIDCUser:
        user = OIDCUser(sub=sub, **claims)
        with self._lock:
            self.users[sub] = user
        return user

    def user(self, sub: str) -> OIDCUser:
        return self.users[sub]

    def sign_in_as(self, sub: str | None) -> None:
        """Approve every authorization as this user at once (None: show the login form)."""
        self.auto_user = sub

    def deny_next(self, error: str = "access_denied") -> None:
        with self._lock:
            self._denials.append(error)

    def rotate_keys(self) -> None:
        """Sign with a new key from now on; the old one stays in the JWKS."""
        with self._lock:
            self.keys.insert(0, self._new_key())

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    @staticmethod
    def _new_key() -> _Key:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _Key(kid=secrets.token_hex(8), private=private)

    # --- protocol ----------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        base = self.issuer
        document: dict[str, Any] = {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/jwks",
            "revocation_endpoint": f"{base}/revoke",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "groups"],
        }
        document.update(self.document_overrides)
        return {name: value for name, value in document.items() if value is not None}

    def _user_claims(self, user: OIDCUser, *, where: str) -> dict[str, Any]:
        claims: dict[str, Any] = {"sub": user.sub}
        if user.email:
            claims.update(email=user.email, email_verified=user.email_verified)
        if user.given_name or user.family_name:
            claims.update(
                given_name=user.given_name,
                family_name=user.family_name,
                name=f"{user.given_name} {user.family_name}".strip(),
            )
        if self.groups_in in ("both", where):
            target = claims
            *parents, leaf = self.groups_claim.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = list(user.groups)
        claims.update(user.extra_claims)
        return claims

    def id_token(self, user: OIDCUser, *, client_id: str, nonce: str = "") -> str:
        now = int(time.time())
        claims = {
            **self._user_claims(user, where="id_token"),
            "iss": self.issuer,
            "aud": client_id,
            "azp": client_id,
            "iat": now,
            "auth_time": now,
            "exp": now + self.id_token_seconds,
        }
        if nonce:
            claims["nonce"] = nonce
        key = self.keys[0]
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    def _client(self, request: web.Request, form: dict[str, str]) -> tuple[OIDCClient, str]:
        """The authenticated client of a token or revocation request, and how it authenticated."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            decoded = base64.b64decode(header[6:]).decode()
            client_id, _, secret = decoded.partition(":")
            client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
            how = "basic"
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            how = "post" if secret else "none"
        client = self.clients.get(client_id)
        if client is None or (client.client_secret is not None and client.client_secret != secret):
            raise OAuthError("invalid_client", "client authentication failed", status=401)
        return client, how

    def authorize(self, params: dict[str, str], username: str | None) -> web.Response:
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            return web.Response(status=400, text="unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return web.Response(status=400, text="redirect_uri is not registered for this client")
        state = params.get("state", "")
        try:
            self._check_authorization(params)
            sub = username if username is not None else self.auto_user
            if sub is None:
                return self._login_form(params, "")
            user = self._find_user(sub)
            if user is None:
                return self._login_form(params, "unknown user")
            if self._denials:
                raise OAuthError(self._denials.pop(0), "the user did not approve")
            if not user.active:
                raise OAuthError("access_denied", "the user is disabled")
        except OAuthError as error:
            reply = {"error": error.error, "error_description": error.description}
            if state:
                reply["state"] = state
            raise web.HTTPFound(_with_query(redirect_uri, reply)) from None
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            sub=user.sub,
            scope=params.get("scope", ""),
            nonce=params.get("nonce", ""),
            code_challenge=params.get("code_challenge", ""),
            expires_at=time.time() + self.code_seconds,
        )
        reply = {"code": code, **({"state": state} if state else {})}
        raise web.HTTPFound(_with_query(redirect_uri, reply))

    def _check_authorization(self, params: dict[str, str]) -> None:
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only the code flow is supported")
        if "openid" not in params.get("scope", "").split():
            raise OAuthError("invalid_scope", "scope must include openid")
        if self.require_state and not params.get("state"):
            raise OAuthError("invalid_request", "state is required")
        if self.require_nonce and not params.get("nonce"):
            raise OAuthError("invalid_request", "nonce is required")
        challenge = params.get("code_challenge", "")
        if self.require_pkce and not challenge:
            raise OAuthError("invalid_request", "code_challenge is required (PKCE)")
        if challenge and params.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256")

    def _find_user(self, name: str) -> OIDCUser | None:
        if name in self.users:
            return self.users[name]
        return next((u for u in self.users.values() if u.email and u.email == name), None)

    def _login_form(self, params: dict[str, str], error: str) -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        body = (
            "<!doctype html><title>Fake IdP sign-in</title>"
            f"<p class='error'>{html.escape(error)}</p>"
            f'<form method="post" action="/authorize">{hidden}'
            '<input name="username" placeholder="sub or email"><button>Sign in</button></form>'
        )
        return web.Response(status=401 if error else 200, text=body, content_type="text/html")

    def token(self, client: OIDCClient, form: dict[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._exchange_code(client, form)
        if grant_type == "refresh_token":
            return self._refresh_tokens(client, form)
        raise OAuthError("unsupported_grant_type", f"{grant_type!r} is not supported")

    def _exchange_code(self, client: OIDCClient, form: dict[str, str]) -> dict[str, Any]:
        grant = self._codes.get(form.get("code", ""))
        if grant is None or grant.used or grant.expires_at < time.time():
            raise OAuthError("invalid_grant", "unknown, used or expired code")
        grant.used = True  # single use, whatever follows
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization's")
        verifier = form.get("code_verifier", "")
        if grant.code_challenge and s256(verifier) != grant.code_challenge:
            raise OAuthError("invalid_grant", "PKCE verification failed")
        if not grant.code_challenge and verifier:
            raise OAuthError("invalid_grant", "code_verifier without a code_challenge")
        user = self.users[grant.sub]
        if not user.active:
            raise OAuthError("invalid_grant", "the user is disabled")
        return self._tokens(client, user, grant.scope, nonce=grant.nonce)

    def _refresh_tokens(self, client: OIDCClient, form: dict[str, str]) -> dict[str, Any]:
        stored = self._refresh.pop(form.get("refresh_token", ""), None)  # rotation: once only
        if stored is None or stored.expires_at < time.time():
            raise OAuthError("invalid_grant", "unknown, used or expired refresh token")
        if stored.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        user = self.users.get(stored.sub)
        if user is None or not user.active:
            raise OAuthError("invalid_grant", "the user is disabled")
        return self._tokens(client, user, stored.scope, nonce="")

    def _tokens(
        self, client: OIDCClient, user: OIDCUser, scope: str, *, nonce: str
    ) -> dict[str, Any]:
        now = time.time()
        access = secrets.token_urlsafe(32)
        self._access[access] = _Token(
            client.client_id, user.sub, scope, now + self.access_token_seconds
        )
        reply: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_seconds,
            "scope": scope,
            "id_token": self.id_token(user, client_id=client.client_id, nonce=nonce),
        }
        if self.always_refresh or "offline_access" in scope.split():
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = _Token(
                client.client_id, user.sub, scope, now + self.refresh_token_seconds
            )
            reply["refresh_token"] = refresh
        return reply

    def userinfo(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        token = self._access.get(header.removeprefix("Bearer ").strip())
        user = self.users.get(token.sub) if token is not None else None
        if token is None or token.expires_at < time.time() or user is None or not user.active:
            raise OAuthError("invalid_token", "unknown or expired access token", status=401)
        return self._user_claims(user, where="userinfo")

    def revoke(self, form: dict[str, str]) -> None:
        token = form.get("token", "")
        self._refresh.pop(token, None)
        self._access.pop(token, None)

    # --- HTTP ------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        header = request.headers.get("Authorization", "")
        how = (
            "basic" if header.startswith("Basic ") else ("post" if "client_secret" in form else "")
        )
        with self._lock:
            self.received.append(
                Received(
                    request.method,
                    request.path,
                    dict(request.query),
                    {k: v for k, v in form.items() if k != "client_secret"},
                    how,
                )
            )
        return form

    @staticmethod
    def _error(error: OAuthError) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        if error.status == 401:
            headers["WWW-Authenticate"] = f'Bearer error="{error.error}"'
        return web.json_response(
            {"error": error.error, "error_description": error.description},
            status=error.status,
            headers=headers,
        )

    async def _handle_discovery(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(self.discovery())

    async def _handle_jwks(self, request: web.Request) -> web.Response:
        await self._record(request)
        with self._lock:
            keys = [key.jwk() for key in self.keys]
        return web.json_response({"keys": keys})

    async def _handle_authorize(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        params = dict(request.query) if request.method == "GET" else form
        username = form.get("username") if request.method == "POST" else None
        params.pop("username", None)
        with self._lock:
            return self.authorize(params, username)

    async def _handle_token(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        try:
            with self._lock:
                client, _ = self._client(request, form)
                reply = self.token(client, form)
        except OAuthError as error:
            return self._error(error)
        return web.json_response(reply, headers={"Cache-Control": "no-store"})

    async def _handle_userinfo(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            with self._lock:
                claims = self.userinfo(request)
        except OAuthError as error:
            return self._error(error)
        return web.json_response(claims)

    async def _handle_revoke(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        try:
            with self._lock:
                self._client(request, form)
                self.revoke(form)
        except OAuthError as error:
            return self._error(error)
        return web.json_response({})

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._handle_discovery)
        app.router.add_get("/jwks", self._handle_jwks)
        app.router.add_route("GET", "/authorize", self._handle_authorize)
        app.router.add_route("POST", "/authorize", self._handle_authorize)
        app.router.add_post("/token", self._handle_token)
        app.router.add_route("GET", "/userinfo", self._handle_userinfo)
        app.router.add_route("POST", "/userinfo", self._handle_userinfo)
        app.router.add_post("/revoke", self._handle_revoke)
        return app

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOIDCProvider:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self._app(), access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-oidc-provider")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake OIDC provider did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOIDCProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
