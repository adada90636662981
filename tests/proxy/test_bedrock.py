"""The Bedrock adapter against the project's fake Bedrock, through the real aiohttp client.

Every request the fake accepts had a valid SigV4 signature (or API key): the fake recomputes
it with botocore. No test reaches AWS: the metadata service is disabled, the AWS config and
credentials files are empty temp files, and STS is the fake.
"""

from __future__ import annotations

import base64
import datetime
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.session import Session

from governance.policy import ProviderConfig, RouteTarget
from proxy.forwarding import READ_ERRORS
from proxy.metering import UsageTally
from proxy.providers import aws_auth
from proxy.providers.aws_auth import CredentialsUnavailable
from proxy.providers.base import UpstreamCall
from proxy.providers.bedrock import BedrockProvider, ProviderMisconfigured, model_url
from proxy.upstream import UpstreamClient
from tests.fakes.bedrock_upstream import (
    ACCESS_KEY,
    API_KEY,
    SECRET_KEY,
    SESSION_ACCESS_KEY,
    SESSION_SECRET,
    SESSION_TOKEN,
    FakeBedrock,
    Reply,
    encode_message,
)
from tests.proxy.provider_fakes import (
    assert_cached_usage,
    assert_platform_body,
    cached_reply,
    drain,
    isolate_aws_credentials,
    json_tally,
    messages_call,
    route_target,
    run_forward,
    stream_of,
)

PROFILE_ID = "us.anthropic.claude-sonnet-4-6-v1:0"
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
STATIC = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing from the machine's AWS setup, and nothing that could leave 127.0.0.1."""
    isolate_aws_credentials(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def fake() -> Iterator[FakeBedrock]:
    with FakeBedrock() as server:
        yield server


@pytest.fixture
async def provider() -> AsyncIterator[BedrockProvider]:
    client = UpstreamClient()
    yield BedrockProvider(client)
    await client.close()


def target(
    fake: FakeBedrock,
    *,
    model: str = PROFILE_ID,
    credentials: Mapping[str, str] | None = None,
    settings: Mapping[str, object] | None = None,
    region: str = "us-east-1",
    base_url: str | None = None,
    name: str = "bedrock-main",
) -> RouteTarget:
    config = ProviderConfig(
        name=name,
        kind="bedrock",
        base_url=fake.base_url if base_url is None else base_url,
        region=region,
        settings=settings or {},
        credentials=STATIC if credentials is None else credentials,
    )
    return route_target(config, model)


def call(*, stream: bool = False, count: bool = False, beta: str = "") -> UpstreamCall:
    headers = {"content-type": "application/json"}
    if beta:
        headers["anthropic-beta"] = beta
    return messages_call(stream=stream, count=count, headers=headers)


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in body.split(b"\n\n"):
        if not frame:
            continue
        name, data = frame.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        events.append((name[7:].decode(), orjson.loads(data[6:])))
    return events


CACHED = cached_reply(Reply)


# --- requests and answers ------------------------------------------------------------------


async def test_json_reply_is_the_anthropic_message_with_exact_usage(fake, provider):
    fake.queue(CACHED)
    response = await provider.send(target=target(fake), call=call())
    body = await drain(response)
    assert (response.status, response.content_type) == (200, "application/json")
    tally = json_tally(body)
    assert_cached_usage(tally)
    assert tally.completed and orjson.loads(body)["content"][0]["text"] == CACHED.text
    assert (b"request-id", b"fake-bedrock-request-0") in response.headers
    received = fake.received[0]
    assert (received.model, received.action) == (PROFILE_ID, "invoke")
    assert_platform_body(received.json, "bedrock-2023-05-31")


async def test_stream_is_reemitted_as_anthropic_sse_with_exact_usage(fake, provider):
    fake.queue(CACHED)
    response, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert (response.status, response.content_type) == (200, "text/event-stream")
    assert_cached_usage(tally)
    assert tally.completed and tally.stop_reason == "end_turn"
    events = sse_events(b"".join(chunks))
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert all(name == data["type"] for name, data in events)
    assert events[-1][1] == {"type": "message_stop"}  # Bedrock's invocation metrics dropped
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == CACHED.text
    assert fake.received[0].action == "invoke-with-response-stream"
    assert fake.received[0].headers["accept"] == "application/vnd.amazon.eventstream"


async def test_frames_split_across_reads_decode_to_the_same_events(fake, provider):
    fake.queue(Reply(split_writes=7), Reply())
    split = await drain(await provider.send(target=target(fake), call=call(stream=True)))
    whole = await drain(await provider.send(target=target(fake), call=call(stream=True)))
    assert sse_events(split) == sse_events(whole)


async def test_betas_travel_in_the_body_without_anthropic_only_ones(fake, provider):
    beta = "interleaved-thinking-2025-05-14, oauth-2025-04-20,context-1m-2025-08-07"
    await drain(await provider.send(target=target(fake), call=call(beta=beta)))
    assert fake.received[0].json["anthropic_beta"] == [
        "interleaved-thinking-2025-05-14",
        "context-1m-2025-08-07",
    ]
    assert "anthropic-beta" not in fake.received[0].headers


async def test_count_tokens_answers_like_anthropic(fake, provider):
    fake.queue(Reply(input_tokens=4321))
    response = await provider.send(target=target(fake), call=call(count=True))
    assert response.status == 200
    assert orjson.loads(await drain(response)) == {"input_tokens": 4321}
    received = fake.received[0]
    assert received.action == "count-tokens"
    inner = orjson.loads(base64.b64decode(received.json["input"]["invokeModel"]["body"]))
    assert inner["anthropic_version"] == "bedrock-2023-05-31" and "model" not in inner


async def test_guardrail_and_latency_settings_are_sent_as_signed_bedrock_headers(fake, provider):
    settings = {
        "guardrail_identifier": "gr-team-7",
        "guardrail_version": "2",
        "performance_latency": "optimized",
    }
    response = await provider.send(target=target(fake, settings=settings), call=call())
    await drain(response)
    assert response.status == 200, fake.refused
    headers = fake.received[0].headers
    assert headers["x-amzn-bedrock-guardrailidentifier"] == "gr-team-7"
    assert headers["x-amzn-bedrock-guardrailversion"] == "2"
    assert headers["x-amzn-bedrock-performanceconfig-latency"] == "optimized"
    assert "x-amzn-bedrock-guardrailidentifier" in headers["authorization"]


async def test_a_stream_closed_early_is_released(fake, provider):
    fake.queue(Reply(text=" ".join(["word"] * 200), deltas=100, split_writes=64))
    response = await provider.send(target=target(fake), call=call(stream=True))
    chunks = response.chunks()
    first = await anext(chunks)
    await response.close()
    assert first.startswith(b"event: message_start")


# --- signing and credentials -------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", [PROFILE_ID, PROFILE_ARN, "anthropic.claude-haiku-4-5-20251001-v1:0"]
)
async def test_model_ids_with_colons_and_slashes_are_signed_as_sent(fake, provider, model):
    response = await provider.send(target=target(fake, model=model), call=call())
    await drain(response)
    assert response.status == 200, fake.refused
    assert fake.received[0].model == model
    assert "/" not in fake.received[0].raw_path.split("/model/")[1].removesuffix("/invoke")


async def test_session_token_is_sent_as_security_token(fake, provider):
    credentials = {
        "access_key_id": SESSION_ACCESS_KEY,
        "secret_access_key": SESSION_SECRET,
        "session_token": SESSION_TOKEN,
    }
    response = await provider.send(target=target(fake, credentials=credentials), call=call())
    await drain(response)
    assert response.status == 200, fake.refused
    assert fake.received[0].headers["x-amz-security-token"] == SESSION_TOKEN


async def test_a_wrong_secret_is_refused_by_the_signature_check(fake, provider):
    credentials = {"access_key_id": ACCESS_KEY, "secret_access_key": "not-the-secret"}
    response = await provider.send(target=target(fake, credentials=credentials), call=call())
    body = orjson.loads(await drain(response))
    assert fake.refused == ["signature mismatch"]
    assert response.status == 401
    assert body["error"]["type"] == "authentication_error"
    assert "not-the-secret" not in body["error"]["message"]


async def test_a_signature_for_another_region_is_refused(fake, provider):
    response = await provider.send(target=target(fake, region="eu-west-1"), call=call())
    await drain(response)
    assert response.status == 401
    assert fake.refused == ["credential scoped to eu-west-1/bedrock"]


async def test_a_bedrock_api_key_is_sent_as_a_bearer_token(fake, provider):
    response = await provider.send(
        target=target(fake, credentials={"api_key": API_KEY}), call=call()
    )
    await drain(response)
    assert response.status == 200, fake.refused
    headers = fake.received[0].headers
    assert headers["authorization"] == f"Bearer {API_KEY}" and "x-amz-date" not in headers


async def test_the_default_chain_picks_environment_credentials(fake, provider, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SESSION_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SESSION_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    response = await provider.send(target=target(fake, credentials={}, region=""), call=call())
    await drain(response)
    assert response.status == 200, fake.refused
    assert fake.received[0].headers["x-amz-security-token"] == SESSION_TOKEN


async def test_a_named_profile_is_read_from_the_shared_credentials_file(
    fake, provider, isolated_aws
):
    (isolated_aws / "aws-credentials").write_text(
        f"[gateway]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    (isolated_aws / "aws-config").write_text("[profile gateway]\nregion = us-east-1\n")
    config = target(fake, credentials={}, region="", settings={"profile": "gateway"})
    response = await provider.send(target=config, call=call())
    await drain(response)
    assert response.status == 200, fake.refused


async def test_a_role_is_assumed_through_sts_and_its_keys_sign(fake, provider, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", fake.base_url)
    role = "arn:aws:iam::123456789012:role/gateway-bedrock"
    settings = {"role_arn": role, "external_id": "tenant-7"}
    for _ in range(2):
        response = await provider.send(target=target(fake, settings=settings), call=call())
        await drain(response)
        assert response.status == 200, fake.refused
    assert len(fake.assumed_roles) == 1  # cached until close to expiry
    assert fake.assumed_roles[0]["RoleArn"] == role
    assert fake.assumed_roles[0]["ExternalId"] == "tenant-7"
    assert (
        fake.received[0]
        .headers["authorization"]
        .startswith("AWS4-HMAC-SHA256 Credential=test-assumed-key-1/")
    )
    assert fake.received[0].headers["x-amz-security-token"] == fake.keys["test-assumed-key-1"].token


async def test_credentials_about_to_expire_are_refreshed(fake, provider, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", fake.base_url)
    monkeypatch.setattr(aws_auth, "REFRESH_INTERVAL_SECONDS", 0.0)
    fake.sts_lifetime = datetime.timedelta(minutes=5)  # inside botocore's refresh window
    settings = {"role_arn": "arn:aws:iam::123456789012:role/gateway-bedrock"}
    for _ in range(2):
        response = await provider.send(target=target(fake, settings=settings), call=call())
        await drain(response)
        assert response.status == 200, fake.refused
    assert len(fake.assumed_roles) == 2
    used = [r.headers["authorization"].split("/")[0] for r in fake.received]
    assert used == [
        "AWS4-HMAC-SHA256 Credential=test-assumed-key-1",
        "AWS4-HMAC-SHA256 Credential=test-assumed-key-2",
    ]


async def test_credentials_are_resolved_off_the_event_loop(fake, provider, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    threads: list[int] = []

    class RecordingSession(Session):  # type: ignore[misc]
        def get_credentials(self) -> Any:
            threads.append(threading.get_ident())
            return super().get_credentials()

    monkeypatch.setattr(aws_auth, "Session", RecordingSession)
    for _ in range(3):
        await drain(await provider.send(target=target(fake, credentials={}), call=call()))
    assert len(threads) == 1  # resolved once, then cached
    assert threads[0] != threading.get_ident()
    assert [r.action for r in fake.received] == ["invoke"] * 3


async def test_no_credentials_anywhere_fails_over_like_an_unreachable_deployment(fake, provider):
    with pytest.raises(CredentialsUnavailable) as raised:
        await provider.send(target=target(fake, credentials={}), call=call())
    assert isinstance(raised.value, OSError)  # forwarding tries the next deployment
    assert fake.received == []


# --- endpoints -------------------------------------------------------------------------------


def test_the_public_endpoint_is_built_from_the_region():
    config = ProviderConfig("b", "bedrock", "", "eu-west-1", {}, {})
    url = model_url(config, "eu-west-1", PROFILE_ARN, "invoke")
    assert url == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/arn:aws:bedrock:us-east-1:"
        "123456789012:application-inference-profile%2Fa1b2c3d4e5f6/invoke"
    )
    with pytest.raises(ProviderMisconfigured):
        model_url(config, "eu-west-1.evil.example/x", PROFILE_ID, "invoke")


async def test_base_url_replaces_the_public_endpoint(fake, provider):
    config = target(fake, base_url=fake.base_url + "/", region="us-east-1")
    response = await provider.send(target=config, call=call())
    await drain(response)
    assert response.status == 200, fake.refused
    assert fake.received[0].raw_path == "/model/us.anthropic.claude-sonnet-4-6-v1:0/invoke"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bedrock", "anthropic"),
    [
        ((400, "ValidationException"), (400, "invalid_request_error")),
        ((403, "AccessDeniedException"), (403, "permission_error")),
        ((404, "ResourceNotFoundException"), (404, "not_found_error")),
        ((408, "ModelTimeoutException"), (504, "timeout_error")),
        ((429, "ThrottlingException"), (429, "rate_limit_error")),
        ((429, "ModelNotReadyException"), (529, "overloaded_error")),
        ((400, "ServiceQuotaExceededException"), (429, "rate_limit_error")),
        ((424, "ModelErrorException"), (500, "api_error")),
        ((500, "InternalServerException"), (500, "api_error")),
        ((503, "ServiceUnavailableException"), (529, "overloaded_error")),
        ((502, "SomethingNewException"), (502, "api_error")),
    ],
)
async def test_bedrock_errors_are_answered_as_anthropic_would(fake, provider, bedrock, anthropic):
    (status, exception), (expected_status, expected_type) = bedrock, anthropic
    fake.queue(Reply(status=status, error_type=exception, error_message="It went wrong."))
    response = await provider.send(target=target(fake), call=call())
    body = orjson.loads(await drain(response))
    assert (response.status, response.content_type) == (expected_status, "application/json")
    assert body["type"] == "error" and body["error"]["type"] == expected_type
    assert body["request_id"] == "fake-bedrock-request-0"
    if expected_status not in (401, 403):
        assert body["error"]["message"] == "It went wrong."


async def test_a_stream_exception_midway_becomes_an_anthropic_error_event(fake, provider):
    fake.queue(
        Reply(
            exception_after=1,
            error_type="modelStreamErrorException",
            error_message="The model stopped.",
            input_tokens=40,
            cache_read=500,
        )
    )
    response = await provider.send(target=target(fake), call=call(stream=True))
    assert response.status == 200
    body = await drain(response)
    tally = UsageTally()
    tally.feed_sse(body)
    name, data = sse_events(body)[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "api_error", "message": "The model stopped."},
    }
    assert tally.error_type == "api_error" and not tally.completed
    assert (tally.input_tokens, tally.cache_read_tokens) == (40, 500)  # message_start kept


async def test_a_stream_exception_before_any_event_is_an_http_error(fake, provider):
    fake.queue(Reply(exception_first=True, error_type="throttlingException"))
    response = await provider.send(target=target(fake), call=call(stream=True))
    body = orjson.loads(await drain(response))
    assert (response.status, response.content_type) == (429, "application/json")
    assert body["error"]["type"] == "rate_limit_error"


async def test_a_corrupt_frame_ends_the_stream_with_an_error_event(fake, provider):
    fake.queue(Reply(corrupt_frame=3))
    response = await provider.send(target=target(fake), call=call(stream=True))
    events = sse_events(await drain(response))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]


async def test_a_dropped_stream_surfaces_as_a_read_error(fake, provider):
    fake.queue(Reply(drop_after=1))
    response = await provider.send(target=target(fake), call=call(stream=True))
    seen = b""
    with pytest.raises(READ_ERRORS):
        async for chunk in response.chunks():
            seen += chunk
    await response.close()
    assert b"event: message_start" in seen


async def test_a_cut_json_answer_surfaces_as_a_read_error(fake, provider):
    fake.queue(Reply(drop_after=0))
    response = await provider.send(target=target(fake), call=call())
    assert response.status == 200
    with pytest.raises(READ_ERRORS):
        await response.read()
    await response.close()


# --- through the forwarding code --------------------------------------------------------------


async def test_throttled_bedrock_fails_over_and_the_stream_is_metered_exactly(fake, provider):
    fake.queue(Reply(status=429, error_type="ThrottlingException"), CACHED)
    order = [target(fake, name="bedrock-east"), target(fake, name="bedrock-backup")]
    outcome, sent = await run_forward({"bedrock": provider}, order, call(stream=True))
    assert (sent.status, outcome.attempts, outcome.provider) == (200, 2, "bedrock-backup")
    assert_cached_usage(outcome.tally)
    assert outcome.upstream_request_id == "fake-bedrock-request-1"
    assert sse_events(sent.body)[-1][0] == "message_stop"


# --- the fake's own wire format ---------------------------------------------------------------


def test_the_fakes_event_stream_frames_decode_with_botocore():
    frame = encode_message({":message-type": "event", ":event-type": "chunk"}, b'{"bytes":"e30="}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame + frame[:5])
    messages = list(buffer)
    assert len(messages) == 1
    assert messages[0].headers == {":message-type": "event", ":event-type": "chunk"}
    assert messages[0].payload == b'{"bytes":"e30="}'
