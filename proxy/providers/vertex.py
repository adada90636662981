"""Google Vertex AI (rawPredict, streamRawPredict, count-tokens) spoken as Anthropic.

Vertex serves Claude in Anthropic's own format (PROTOCOLS.md 4.4): the model goes in the URL,
the body is Anthropic's minus `model` (kept for count-tokens) plus Vertex's `anthropic_version`,
betas stay in the `anthropic-beta` header, and the caller is a Google OAuth2 bearer token
(proxy/providers/google_auth.py). Replies pass through as they come (a message, Anthropic SSE,
a token count); Google's errors are turned into the status and body Anthropic would answer, so
failover, metering and the ledger never learn which provider served.

Provider fields: `region` (a Vertex location such as `us-east5`, the multi-regions `us` and
`eu`, or `global`, which an empty region means), `base_url` (a Private Service Connect
endpoint or a local fake instead of Google's public host; the `/v1/projects/...` path goes
under it), settings `project_id` (else the service account's or ADC's project), credentials
`service_account_json` (else Application Default Credentials).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from governance.policy import ProviderConfig, RouteTarget
from proxy.errors import anthropic_error_body, anthropic_type_for
from proxy.providers.base import UpstreamCall
from proxy.providers.google_auth import REFRESH_MARGIN, AccessToken, TokenSource
from proxy.upstream import HttpResponse, UpstreamClient, UpstreamResponse

logger = logging.getLogger("gateway.providers.vertex")

VERTEX_VERSION = "vertex-2023-10-16"
DEFAULT_REGION = "global"
MULTI_REGIONS = frozenset({"us", "eu"})
RAW, STREAM = "rawPredict", "streamRawPredict"
COUNT_TOKENS_MODEL = "count-tokens"
# Betas that only mean something to Anthropic's own API (subscription OAuth never leaves it).
ANTHROPIC_ONLY_BETAS = frozenset({"oauth-2025-04-20"})
# Names that go into the URL path: nothing that could leave the model resource ('/', '?',
# '#', '..') or name another method (':'). Dated Vertex ids carry '@'.
REGION_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,40}")
PROJECT_PATTERN = re.compile(r"[a-z0-9][a-z0-9.:-]{0,99}")
MODEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")
MAX_MESSAGE_LENGTH = 2000
SOURCE_CACHE_SIZE = 64  # token sources kept, one per distinct provider configuration

# Google's canonical error statuses -> the status and error type Anthropic would answer.
# Quota is a rate limit; "unavailable" is capacity (529, which clients and failover retry).
GOOGLE_ERRORS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (500, "api_error"),
    "UNKNOWN": (500, "api_error"),
    "INTERNAL": (500, "api_error"),
    "DATA_LOSS": (500, "api_error"),
    "UNAVAILABLE": (529, "overloaded_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}
# HTTP statuses Anthropic does not use, when the body names no Google status.
STATUS_FALLBACK = {503: 529, 499: 500}


class VertexMisconfigured(OSError):
    """A Vertex provider whose settings cannot make a request (an OSError so that the request
    fails over to the next deployment, like one that cannot be reached)."""


# --- requests --------------------------------------------------------------------------------


def api_base(provider: ProviderConfig, region: str) -> str:
    """Google's endpoint for the region, or the provider's base URL, ending in /v1."""
    if provider.base_url:
        base = provider.base_url.rstrip("/")
        # Written as Anthropic's Vertex client takes it (.../v1) or as a bare host.
        return base if base.endswith("/v1") else base + "/v1"
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    if region in MULTI_REGIONS:
        return f"https://aiplatform.{region}.rep.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


def region_of(provider: ProviderConfig) -> str:
    region = provider.region.strip() or DEFAULT_REGION
    if not REGION_PATTERN.fullmatch(region):
        raise VertexMisconfigured(f"provider {provider.name}: not a Vertex AI location name")
    return region


def project_of(provider: ProviderConfig, token: AccessToken) -> str:
    configured = provider.settings.get("project_id")
    project = configured.strip() if isinstance(configured, str) else ""
    project = project or token.project_id
    if not project:
        raise VertexMisconfigured(
            f"provider {provider.name}: no project_id in settings, service account or ADC"
        )
    if not PROJECT_PATTERN.fullmatch(project):
        raise VertexMisconfigured(f"provider {provider.name}: not a Google Cloud project id")
    return project


def predict_url(
    provider: ProviderConfig, *, project: str, region: str, model: str, method: str
) -> str:
    """`model` is the Vertex model id, or "count-tokens" (with rawPredict)."""
    base = api_base(provider, region)
    path = f"projects/{project}/locations/{region}/publishers/anthropic/models/{model}"
    return f"{base}/{path}:{method}"


def is_model_id(model: str) -> bool:
    return MODEL_PATTERN.fullmatch(model) is not None


def _without_vertex_fields(parsed: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in parsed.items() if k not in ("model", "stream", "anthropic_version")}


def predict_body(call: UpstreamCall) -> bytes:
    """The rawPredict / streamRawPredict body: Anthropic's, the model taken from the URL."""
    body = _without_vertex_fields(call.parsed)
    if call.stream:
        body["stream"] = True  # streamRawPredict wants it, as Anthropic's API does
    body["anthropic_version"] = VERTEX_VERSION
    return orjson.dumps(body)


def count_tokens_body(call: UpstreamCall, model: str) -> bytes:
    body = _without_vertex_fields(call.parsed)
    body["model"] = model  # count-tokens is one endpoint for every model
    body["anthropic_version"] = VERTEX_VERSION
    return orjson.dumps(body)


def request_headers(call: UpstreamCall, token: AccessToken) -> dict[str, str]:
    """Only what Vertex needs: other client headers (x-goog-user-project, say) would let a
    developer change how the gateway's Google identity is billed or routed."""
    headers = {
        "content-type": "application/json",
        "accept-encoding": "identity",
        **token.headers(),
    }
    header = call.headers.get("anthropic-beta", "")
    betas = dict.fromkeys(b.strip() for b in header.split(",") if b.strip())
    kept = [b for b in betas if b not in ANTHROPIC_ONLY_BETAS]
    if kept:
        headers["anthropic-beta"] = ",".join(kept)
    return headers


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VertexFailure:
    """A Vertex error, as Anthropic would have reported it."""

    status: int
    error_type: str
    message: str

    def body(self, request_id: str) -> bytes:
        return anthropic_error_body(self.error_type, self.message, request_id)


def _error_object(payload: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The parsed body and its `error` object; streaming endpoints wrap it in a list."""
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
        return None
    return parsed, parsed["error"]


def failure_of(http_status: int, payload: bytes) -> VertexFailure:
    """Map a non-200 Vertex answer: Google's `{"error": {code, message, status}}`, an
    Anthropic error Vertex passed on (a prompt too long, say), or no usable body at all."""
    if 300 <= http_status < 400 or http_status < 200:
        return VertexFailure(
            502, "api_error", f"Vertex AI answered HTTP {http_status} (not followed)."
        )
    found = _error_object(payload)
    status = STATUS_FALLBACK.get(http_status, http_status)
    error_type, message = anthropic_type_for(status), ""
    if found is not None:
        parsed, error = found
        message = str(error.get("message") or "")[:MAX_MESSAGE_LENGTH]
        named = error.get("type")
        if parsed.get("type") == "error" and isinstance(named, str) and named:
            error_type = named
            status = 529 if named == "overloaded_error" else status
        elif isinstance(error.get("status"), str) and error["status"] in GOOGLE_ERRORS:
            status, error_type = GOOGLE_ERRORS[error["status"]]
    if status in (401, 403):
        # Google's wording names the project and service account: not for the client.
        message = "Vertex AI refused the gateway's Google credentials."
    return VertexFailure(status, error_type, message or f"Vertex AI answered HTTP {http_status}.")


class VertexReply:
    """An answer made here (a mapped error): Anthropic-shaped JSON."""

    content_type = "application/json"

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self._body = body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body

    async def close(self) -> None:
        return None


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    return next((value.decode() for name, value in headers if name == b"request-id"), "")


async def answer(response: HttpResponse) -> UpstreamResponse:
    """Vertex's HTTP answer in Anthropic's shape: a 200 as it is (message JSON, Anthropic SSE
    or a token count), anything else mapped."""
    if response.status == 200:
        return response
    try:
        payload = await response.read()
    finally:
        await response.close()
    failure = failure_of(response.status, payload)
    return VertexReply(
        failure.status, response.headers, failure.body(_request_id(response.headers))
    )


def refused(status: int, error_type: str, message: str) -> VertexReply:
    return VertexReply(status, [], anthropic_error_body(error_type, message, ""))


# --- the adapter -----------------------------------------------------------------------------


class VertexProvider:
    """Claude on Google Vertex AI behind the Anthropic Messages API (providers of kind
    "vertex"). One instance per worker; it caches an access token per provider configuration.

    `clock` (monotonic seconds) and `refresh_margin` exist for tests.
    """

    def __init__(
        self,
        client: UpstreamClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._client = client
        self._clock = clock
        self._margin = refresh_margin
        self._sources: dict[tuple[str, str], TokenSource] = {}

    def _source(self, provider: ProviderConfig) -> TokenSource:
        key_json = provider.credentials.get("service_account_json") or ""
        key = (provider.name, key_json)
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= SOURCE_CACHE_SIZE:  # configs replaced over time
                del self._sources[next(iter(self._sources))]
            source = TokenSource(key_json, clock=self._clock, margin=self._margin)
            self._sources[key] = source
        return source

    async def send(self, *, target: RouteTarget, call: UpstreamCall) -> UpstreamResponse:
        provider = target.provider
        model = target.upstream_model or str(call.parsed.get("model") or "")
        if not is_model_id(model):
            return refused(404, "not_found_error", "The model is not a Vertex AI model id.")
        source = self._source(provider)
        try:
            region = region_of(provider)
            token = await source.token()
            project = project_of(provider, token)
        except VertexMisconfigured as exc:
            logger.warning("%s", exc)
            raise
        if call.path.endswith("/count_tokens"):
            where = {"model": COUNT_TOKENS_MODEL, "method": RAW}
            body = count_tokens_body(call, model)
        else:
            where = {"model": model, "method": STREAM if call.stream else RAW}
            body = predict_body(call)
        url = predict_url(provider, project=project, region=region, **where)
        response = await self._client.post(url, headers=request_headers(call, token), body=body)
        if response.status == 401:
            # A token Google no longer takes (revoked, key rotated): once more with a new one,
            # as Anthropic's SDK does with its token providers. Nothing reached the client yet.
            source.invalidate(token)
            await response.close()
            token = await source.token()
            headers = request_headers(call, token)
            response = await self._client.post(url, headers=headers, body=body)
            if response.status == 401:
                source.invalidate(token)
        try:
            return await answer(response)
        except BaseException:
            await response.close()
            raise
