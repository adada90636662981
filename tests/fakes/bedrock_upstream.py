"""A fake AWS Bedrock runtime (and a sliver of STS) on 127.0.0.1, speaking the real wire format.

It checks every request's SigV4 signature the way AWS does (recomputed with botocore from the
request as received, with the credentials it knows) and refuses a bad one with 403
InvalidSignatureException; a Bedrock API key is accepted as `Authorization: Bearer`. Answers:
the Anthropic message JSON for /invoke, the binary `application/vnd.amazon.eventstream` for
/invoke-with-response-stream (frames encoded here: prelude, headers, payload, CRCs), and
`{"inputTokens": N}` for /count-tokens. Faults: error statuses with x-amzn-ErrorType, an
exception frame mid-stream or first, a dropped connection, frames split across writes.
STS AssumeRole (query protocol, XML) hands out temporary keys the fake then accepts.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import itertools
import json
import re
import secrets
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from tests.fakes import anthropic_wire as wire
from tests.fakes.server import FakeServer, JsonBody

ACCESS_KEY = "test-access-key-id"
SECRET_KEY = "test-secret-access-key-0123456789"
SESSION_ACCESS_KEY = "test-session-access-key-id"
SESSION_SECRET = "test-session-secret-0123456789"
SESSION_TOKEN = "test-session-token-0123456789/+="
API_KEY = "test-bedrock-api-key-0123456789"
BEDROCK_VERSION = "bedrock-2023-05-31"
MESSAGE_ID = "msg_bdrk_fake"

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
_PATH = re.compile(
    r"/model/(?P<model>[^/]+)/(?P<action>invoke|invoke-with-response-stream|count-tokens)"
)


# --- event-stream encoding ------------------------------------------------------------------


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths + CRC), string headers, payload, CRC."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes([len(raw_name)]) + raw_name + b"\x07"
        encoded += struct.pack(">H", len(raw_value)) + raw_value
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_message(event: Mapping[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, payload.encode())


def exception_message(exception_type: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())


# --- SigV4 verification ---------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    secret: str
    token: str | None = None


def _header_problem(
    match: re.Match[str], headers: Mapping[str, str], key: Key, service: str, region: str
) -> str | None:
    if key.token is not None and headers.get("x-amz-security-token") != key.token:
        return "missing or wrong x-amz-security-token"
    if (match["service"], match["region"]) != (service, region):
        return f"credential scoped to {match['region']}/{match['service']}"
    signed = match["signed"].split(";")
    if not headers.get("x-amz-date", "").startswith(match["date"]):
        return "x-amz-date is not on the scope's date"
    if not {"host", "x-amz-date"} <= set(signed) or any(n not in headers for n in signed):
        return "host and x-amz-date must be signed, and every signed header sent"
    return None


def signature_problem(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, Key],
    service: str,
    region: str,
) -> str | None:
    """Why the request's SigV4 signature does not hold (None when it does)."""
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    key = keys.get(match["key"]) if match is not None else None
    if match is None or key is None:
        return "not a SigV4 signature by a known access key"
    problem = _header_problem(match, headers, key, service, region)
    if problem is not None:
        return problem
    claimed_hash = headers.get("x-amz-content-sha256")
    if claimed_hash is not None and claimed_hash != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 does not match the body"
    signed = match["signed"].split(";")
    request = AWSRequest(
        method=method, url=url, data=body, headers={name: headers[name] for name in signed}
    )
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(
        ReadOnlyCredentials(match["key"], key.secret, key.token, None), service, region
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return None if hmac.compare_digest(expected, match["signature"]) else "signature mismatch"


# --- the fake -------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    error_type: str = "ThrottlingException"  # x-amzn-ErrorType (status != 200) or stream exception
    error_message: str = "Too many requests, please wait before trying again."
    text: str = "Hello from the fake Bedrock."
    model: str = "claude-sonnet-4-6"
    input_tokens: int = 25
    output_tokens: int = 12
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    deltas: int = 3
    exception_after: int | None = None  # text deltas sent before an exception frame
    drop_after: int | None = None  # text deltas sent before the connection is cut
    exception_first: bool = False  # the stream is a single exception frame
    split_writes: int | None = None  # write the stream in pieces of this many bytes
    corrupt_frame: int | None = None  # flip a bit in this frame's message CRC


@dataclass
class Received(JsonBody):
    method: str
    raw_path: str
    model: str  # the model id, percent-decoded from the path
    action: str
    headers: dict[str, str]
    body: bytes


def _error(status: int, exception: str, message: str, request_id: str) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": request_id,
        },
    )


@dataclass
class FakeBedrock(FakeServer[Reply]):
    region: str = "us-east-1"
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each refused request was refused
    assumed_roles: list[dict[str, str]] = field(default_factory=list)
    keys: dict[str, Key] = field(
        default_factory=lambda: {
            ACCESS_KEY: Key(SECRET_KEY),
            SESSION_ACCESS_KEY: Key(SESSION_SECRET, SESSION_TOKEN),
        }
    )
    api_keys: set[str] = field(default_factory=lambda: {API_KEY})
    sts_lifetime: datetime.timedelta = datetime.timedelta(hours=1)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    thread_name = "fake-bedrock"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/", self._sts)
        app.router.add_post("/model/{tail:.+}", self._bedrock)

    def _request_id(self) -> str:
        return f"fake-bedrock-request-{next(self._ids)}"

    # --- authentication -------------------------------------------------------------------

    def _authentication_problem(
        self, request: web.Request, body: bytes, service: str
    ) -> str | None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        bearer = headers.get("authorization", "")
        if service == "bedrock" and bearer.startswith("Bearer "):
            return None if bearer[7:] in self.api_keys else "unknown API key"
        return signature_problem(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            headers=headers,
            body=body,
            keys=self.keys,
            service=service,
            region=self.region,
        )

    # --- bedrock-runtime -----------------------------------------------------------------

    async def _bedrock(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        request_id = self._request_id()
        match = _PATH.fullmatch(request.raw_path)
        if match is None:
            return _error(404, "UnknownOperationException", "Unknown operation", request_id)
        problem = self._authentication_problem(request, body, "bedrock")
        if problem is not None:
            self.refused.append(problem)
            return _error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
                request_id,
            )
        received = Received(
            request.method,
            request.raw_path,
            unquote(match["model"]),
            match["action"],
            {name.lower(): value for name, value in request.headers.items()},
            body,
        )
        self.received.append(received)
        reply = self.next_reply()
        if match["action"] == "count-tokens":
            return self._count_tokens(received, reply, request_id)
        return await self._answer(request, received, reply, request_id)

    async def _answer(
        self, request: web.Request, received: Received, reply: Reply, request_id: str
    ) -> web.StreamResponse:
        invalid = self._invalid_body(received.body)
        if invalid is not None:
            return _error(400, "ValidationException", invalid, request_id)
        if reply.status != 200:
            return _error(reply.status, reply.error_type, reply.error_message, request_id)
        if received.action == "invoke":
            return await self._invoke(request, reply, request_id)
        return await self._stream(request, reply, request_id)

    @staticmethod
    def _invalid_body(body: bytes) -> str | None:
        try:
            payload = json.loads(body)
        except ValueError:
            return "Malformed input request, please reformat your input and try again."
        extraneous = sorted({"model", "stream"} & set(payload))
        if extraneous:
            return f"Malformed input request: extraneous key [{extraneous[0]}] is not permitted"
        if payload.get("anthropic_version") != BEDROCK_VERSION:
            return "Malformed input request: anthropic_version is missing or invalid"
        return None

    def _count_tokens(self, received: Received, reply: Reply, request_id: str) -> web.Response:
        try:
            inner = base64.b64decode(received.json["input"]["invokeModel"]["body"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "ValidationException", "input.invokeModel.body", request_id)
        invalid = self._invalid_body(inner)
        if invalid is not None:
            return _error(400, "ValidationException", invalid, request_id)
        if reply.status != 200:
            return _error(reply.status, reply.error_type, reply.error_message, request_id)
        return web.json_response(
            {"inputTokens": reply.input_tokens}, headers={"x-amzn-RequestId": request_id}
        )

    async def _invoke(
        self, request: web.Request, reply: Reply, request_id: str
    ) -> web.StreamResponse:
        message = wire.message(MESSAGE_ID, reply.model, reply.text, wire.usage(reply))
        headers = {
            "x-amzn-RequestId": request_id,
            "x-amzn-bedrock-input-token-count": str(reply.input_tokens),
            "x-amzn-bedrock-output-token-count": str(reply.output_tokens),
        }
        if reply.drop_after is not None:
            raw = json.dumps(message).encode()
            response = web.StreamResponse(
                headers={
                    **headers,
                    "content-type": "application/json",
                    "content-length": str(len(raw)),
                }
            )
            await response.prepare(request)
            await response.write(raw[: len(raw) // 2])
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.json_response(message, headers=headers)

    @staticmethod
    def _events(reply: Reply) -> list[bytes]:
        opening = wire.opening_events(MESSAGE_ID, reply.model, wire.usage(reply), ping=False)
        frames = [chunk_message(event) for event in opening]
        for sent, piece in enumerate(wire.text_pieces(reply.text, reply.deltas)):
            if reply.exception_after is not None and sent == reply.exception_after:
                frames.append(exception_message(reply.error_type, reply.error_message))
                return frames
            if reply.drop_after is not None and sent == reply.drop_after:
                frames.append(b"DROP")
                return frames
            frames += [chunk_message(event) for event in wire.delta_events(sent, piece)]
        *closing, stop = wire.closing_events(reply.output_tokens)
        stop["amazon-bedrock-invocationMetrics"] = {
            "inputTokenCount": reply.input_tokens,
            "outputTokenCount": reply.output_tokens,
            "invocationLatency": 120,
            "firstByteLatency": 40,
            "cacheReadInputTokenCount": reply.cache_read,
            "cacheWriteInputTokenCount": reply.cache_write_5m + reply.cache_write_1h,
        }
        return frames + [chunk_message(event) for event in [*closing, stop]]

    async def _stream(
        self, request: web.Request, reply: Reply, request_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "application/vnd.amazon.eventstream",
                "x-amzn-RequestId": request_id,
                "x-amzn-bedrock-content-type": "application/json",
            }
        )
        await response.prepare(request)
        frames = self._events(reply)
        if reply.exception_first:
            frames = [exception_message(reply.error_type, reply.error_message)]
        if reply.corrupt_frame is not None:
            damaged = bytearray(frames[reply.corrupt_frame])
            damaged[-1] ^= 0x01
            frames[reply.corrupt_frame] = bytes(damaged)
        for frame in frames:
            if frame == b"DROP":
                assert request.transport is not None
                request.transport.abort()
                return response
            step = reply.split_writes or len(frame)
            for offset in range(0, len(frame), step):
                await response.write(frame[offset : offset + step])
        await response.write_eof()
        return response

    # --- STS ------------------------------------------------------------------------------

    async def _sts(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = self._authentication_problem(request, body, "sts")
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        if problem is not None or form.get("Action") != "AssumeRole":
            self.refused.append(problem or "not AssumeRole")
            return web.Response(status=403, text="<ErrorResponse/>", content_type="text/xml")
        self.assumed_roles.append(form)
        access_key = f"test-assumed-key-{len(self.assumed_roles)}"
        key = self.keys[access_key] = Key(secrets.token_hex(16), secrets.token_hex(24))
        expiration = datetime.datetime.now(datetime.UTC) + self.sts_lifetime
        xml = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>{access_key}</AccessKeyId>
      <SecretAccessKey>{key.secret}</SecretAccessKey>
      <SessionToken>{key.token}</SessionToken>
      <Expiration>{expiration.strftime("%Y-%m-%dT%H:%M:%SZ")}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROATESTROLE:{form.get("RoleSessionName", "")}</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/test/{form.get("RoleSessionName", "")}</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>{self._request_id()}</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""
        return web.Response(text=xml, content_type="text/xml")
