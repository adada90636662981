"""A fake Google Vertex AI on 127.0.0.1: its OAuth2 token endpoint and Claude's rawPredict /
streamRawPredict / count-tokens, in the real wire formats, with fault injection.

The token endpoint takes what google-auth posts for a service account (a JWT assertion signed
with the key's RSA private key), verifies the signature with the public key of a service
account the fake made (`service_account()`), and issues opaque bearer tokens. The prediction
endpoints refuse any other bearer token (401 UNAUTHENTICATED), check the URL shape (project,
location, publisher, model, method) and the body (anthropic_version, no model but for
count-tokens, stream matching the method), and answer with Anthropic JSON or SSE. Tests queue
`Reply` objects to pick what each prediction request gets: a message, a stream, a Google error,
an Anthropic error passed on, an `event: error` in a 200 stream, a dropped connection.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import anthropic_wire as wire
from tests.fakes.server import FakeServer, JsonBody

VERTEX_VERSION = "vertex-2023-10-16"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always addresses the assertion to Google's token endpoint, wherever it posts it.
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
MESSAGE_ID = "msg_vrtx_fake"
OVERLOADED = {"type": "overloaded_error", "message": "Overloaded"}  # the error event mid-stream
PREDICT_PATH = re.compile(
    r"(?P<prefix>.*)/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)"
)


@functools.cache
def _private_key() -> rsa.RSAPrivateKey:
    # One key per test process: generating RSA keys is slow on a busy machine.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Reply:
    status: int = 200
    text: str = "Hello from the fake Vertex AI."
    model: str | None = None  # the served model; defaults to the one in the URL
    input_tokens: int = 25
    output_tokens: int = 12
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    google_status: str = "RESOURCE_EXHAUSTED"  # error replies: Google's status name
    error_message: str = "Quota exceeded for aiplatform.googleapis.com/online_prediction."
    anthropic_error: str | None = None  # an Anthropic error body (Vertex passes them on)
    error_as_list: bool = False  # Google's error wrapped in a JSON array
    plain_error: bytes | None = None  # a non-JSON error body (a front end's HTML page)
    stream_error_after: int | None = None  # deltas sent before an `event: error`
    drop_after: int | None = None  # deltas sent before the connection is cut
    deltas: int = 3


@dataclass
class Received(JsonBody):
    path: str
    raw_path: str  # as it came on the wire, before percent-decoding
    headers: dict[str, str]
    body: bytes
    project: str
    location: str
    model: str
    method: str


@dataclass
class FakeVertex(FakeServer[Reply]):
    project: str = "fake-project"
    expires_in: int = 3600  # what the token endpoint says its tokens live
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why requests were refused
    token_requests: int = 0
    tokens: list[str] = field(default_factory=list)  # issued, in order
    token_failures: collections.deque[int] = field(default_factory=collections.deque)
    token_redirect: str | None = None  # answer token requests with a 307 to this path
    refuse_tokens: bool = False  # refuse every bearer token, even freshly issued ones
    # Set to hold token requests until the test lets them go (the handler waits in a thread);
    # gate_opened records, per held request, whether the test opened the gate in time.
    token_gate: threading.Event | None = None
    gate_opened: list[bool] = field(default_factory=list)
    _valid: set[str] = field(default_factory=set)
    _keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)

    thread_name = "fake-vertex"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._token)
        app.router.add_post("/{tail:.*}", self._predict)

    def stop(self) -> None:
        if self.token_gate is not None:
            self.token_gate.set()  # a held token request must not keep the loop from stopping
        super().stop()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def revoke_tokens(self) -> None:
        self._valid.clear()

    def service_account(
        self, *, email: str = "gateway@fake-project.iam.gserviceaccount.com", project: str = ""
    ) -> dict[str, str]:
        """A service account key whose token_uri is this fake; its public key is trusted."""
        key = _private_key()
        self._keys[email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": project or self.project,
            "private_key_id": "fake-key-1",
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        }

    # --- token endpoint ------------------------------------------------------------------

    def _assertion_error(self, assertion: str) -> str:
        """Why a JWT assertion is refused, or "" when it is good."""
        try:
            head, payload, signature = assertion.split(".")
            header = json.loads(_b64(head))
            claims = json.loads(_b64(payload))
            raw_signature = _b64(signature)
        except ValueError:
            return "malformed assertion"
        key = self._keys.get(str(claims.get("iss")))
        if key is None or header.get("alg") != "RS256":
            return "unknown issuer or algorithm"
        try:
            signed = f"{head}.{payload}".encode()
            key.verify(raw_signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "invalid JWT signature"
        now = time.time()
        audiences = (GOOGLE_TOKEN_ENDPOINT, self.token_uri)
        if claims.get("aud") not in audiences or SCOPE not in str(claims.get("scope")).split():
            return "wrong audience or scope"
        if not claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0) + 300:
            return "assertion expired"
        return ""

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if self.token_redirect is not None:
            raise web.HTTPTemporaryRedirect(self.token_redirect)
        if self.token_gate is not None:
            loop = asyncio.get_running_loop()
            self.gate_opened.append(await loop.run_in_executor(None, self.token_gate.wait, 10))
        if self.token_failures:
            # 5xx and "internal_failure" are retried by google-auth; a 4xx invalid_grant is not.
            status = self.token_failures.popleft()
            error = "internal_failure" if status >= 500 else "invalid_grant"
            return web.json_response(
                {"error": error, "error_description": "fake token failure"}, status=status
            )
        problem = (
            "unsupported grant type"
            if form.get("grant_type") != JWT_BEARER
            else self._assertion_error(str(form.get("assertion", "")))
        )
        if problem:
            self.refused.append(problem)
            return web.json_response(
                {"error": "invalid_grant", "error_description": problem}, status=400
            )
        token = f"ya29.fake-{len(self.tokens) + 1}-{secrets.token_urlsafe(8)}"
        self.tokens.append(token)
        self._valid.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    # --- prediction endpoints ------------------------------------------------------------

    def _refusal(self, request: web.Request, body: bytes) -> web.Response | Received:
        """The request as received, or Google's answer to a request it would refuse."""
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or token not in self._valid or self.refuse_tokens:
            self.refused.append("bearer token")
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        match = PREDICT_PATH.fullmatch(request.path)
        if match is None or match["publisher"] != "anthropic":
            self.refused.append(f"path {request.path}")
            return google_error(404, "NOT_FOUND", "The requested URL was not found.")
        if match["project"] != self.project:
            self.refused.append(f"project {match['project']}")
            return google_error(403, "PERMISSION_DENIED", "Permission denied on resource.")
        received = Received(
            request.path,
            request.raw_path,
            dict(request.headers),
            body,
            match["project"],
            match["location"],
            match["model"],
            match["method"],
        )
        problem = _body_problem(received)
        if problem:
            self.refused.append(problem)
            return anthropic_error(400, "invalid_request_error", problem)
        return received

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        outcome = self._refusal(request, body)
        if isinstance(outcome, web.Response):
            return outcome
        self.received.append(outcome)
        reply = self.next_reply()
        payload = outcome.json
        if reply.status != 200:
            return _error_reply(reply)
        if outcome.model == "count-tokens":
            return web.json_response({"input_tokens": reply.input_tokens})
        model = reply.model or outcome.model
        if outcome.method == "rawPredict":
            return web.json_response(wire.message(MESSAGE_ID, model, reply.text, wire.usage(reply)))
        assert payload["stream"] is True
        return await _stream(request, reply, model)


# --- wire format -------------------------------------------------------------------------------


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def google_error(status: int, google_status: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "status": google_status}}, status=status
    )


def anthropic_error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}}, status=status
    )


def _body_problem(received: Received) -> str:
    """Why Vertex would refuse this body, or "" (the first failed check wins)."""
    try:
        payload = received.json
    except ValueError:
        return "the body is not JSON"
    if not isinstance(payload, dict):
        return "the body is not a JSON object"
    counting = received.model == "count-tokens"
    streaming = received.method == "streamRawPredict"
    checks = [
        (payload.get("anthropic_version") == VERTEX_VERSION, "anthropic_version is wrong"),
        (received.method in ("rawPredict", "streamRawPredict"), "unknown method"),
        (not counting or (not streaming and bool(payload.get("model"))), "count-tokens shape"),
        (counting or "model" not in payload, "model: Extra inputs are not permitted"),
        (counting or streaming == (payload.get("stream") is True), "stream must match method"),
    ]
    return next((problem for passed, problem in checks if not passed), "")


def _error_reply(reply: Reply) -> web.Response:
    if reply.plain_error is not None:
        return web.Response(status=reply.status, body=reply.plain_error, content_type="text/html")
    if reply.anthropic_error is not None:
        return anthropic_error(reply.status, reply.anthropic_error, reply.error_message)
    error = {
        "error": {
            "code": reply.status,
            "message": reply.error_message,
            "status": reply.google_status,
        }
    }
    return web.json_response([error] if reply.error_as_list else error, status=reply.status)


async def _stream(request: web.Request, reply: Reply, model: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    start = (MESSAGE_ID, model, wire.usage(reply))
    await wire.stream_text(request, response, start=start, script=reply, error=OVERLOADED)
    return response
