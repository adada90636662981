"""The Vertex AI adapter against the project's fake Vertex, through the real aiohttp client.

Every prediction the fake accepts carried a bearer token the fake's own token endpoint issued,
for a JWT assertion whose RSA signature it verified. No test reaches Google: the service
accounts' token_uri is the fake, ADC finds nothing on the machine (no gcloud config, no
metadata server check), and base_url points every request at the fake.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from governance.policy import ProviderConfig, RouteTarget
from proxy.forwarding import READ_ERRORS
from proxy.metering import UsageTally
from proxy.providers.base import UpstreamCall
from proxy.providers.google_auth import AccessToken, TokenUnavailable
from proxy.providers.vertex import (
    VertexMisconfigured,
    VertexProvider,
    failure_of,
    predict_url,
    request_headers,
)
from proxy.upstream import UpstreamClient
from tests.fakes.vertex_upstream import FakeVertex, Reply
from tests.proxy.provider_fakes import (
    Clock,
    assert_cached_usage,
    assert_platform_body,
    cached_reply,
    drain,
    isolate_google_credentials,
    json_tally,
    route_target,
    run_forward,
    stream_of,
)
from tests.proxy.provider_fakes import messages_call as call

DATED_MODEL = "claude-sonnet-4-5@20250929"


@pytest.fixture(autouse=True)
def isolated_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the machine's Google setup, and nothing that could leave 127.0.0.1."""
    isolate_google_credentials(monkeypatch, tmp_path)


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with FakeVertex() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(clock: Clock) -> AsyncIterator[VertexProvider]:
    client = UpstreamClient()
    yield VertexProvider(client, clock=clock)
    await client.close()


def key_of(fake: FakeVertex, **kwargs: str) -> dict[str, str]:
    return {"service_account_json": json.dumps(fake.service_account(**kwargs))}


def target(
    fake: FakeVertex,
    *,
    model: str = "claude-sonnet-4-6",
    credentials: Mapping[str, str] | None = None,
    settings: Mapping[str, object] | None = None,
    region: str = "us-east5",
    base_url: str | None = None,
    name: str = "vertex-main",
) -> RouteTarget:
    config = ProviderConfig(
        name=name,
        kind="vertex",
        base_url=fake.base_url if base_url is None else base_url,
        region=region,
        settings={"project_id": fake.project} if settings is None else settings,
        credentials=key_of(fake) if credentials is None else credentials,
    )
    return route_target(config, model)


async def send_ok(provider: VertexProvider, config: RouteTarget) -> bytes:
    response = await provider.send(target=config, call=call())
    body = await drain(response)
    assert response.status == 200, body
    return body


def bearer_tokens(fake: FakeVertex) -> list[str]:
    return [r.headers["Authorization"].removeprefix("Bearer ") for r in fake.received]


CACHED = cached_reply(Reply)


# --- requests and answers ------------------------------------------------------------------


async def test_json_reply_is_the_anthropic_message_with_exact_usage(fake, provider):
    fake.queue(CACHED)
    response = await provider.send(target=target(fake, model=DATED_MODEL), call=call())
    body = await drain(response)
    assert (response.status, response.content_type) == (200, "application/json; charset=utf-8")
    tally = json_tally(body)
    assert_cached_usage(tally)
    assert tally.completed and tally.model == DATED_MODEL
    received = fake.received[0]
    assert (received.location, received.model, received.method) == (
        "us-east5",
        DATED_MODEL,
        "rawPredict",
    )
    assert received.raw_path.endswith(f"/models/{DATED_MODEL}:rawPredict")  # '@' as is
    assert_platform_body(received.json, "vertex-2023-10-16")


async def test_stream_is_anthropic_sse_with_exact_usage(fake, provider):
    fake.queue(CACHED)
    response, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert (response.status, response.content_type) == (200, "text/event-stream")
    assert_cached_usage(tally)
    assert tally.completed and tally.stop_reason == "end_turn"
    assert b"".join(chunks).startswith(b"event: message_start\n")
    received = fake.received[0]
    assert received.method == "streamRawPredict" and received.json["stream"] is True


async def test_count_tokens_goes_to_the_count_tokens_model_with_the_model_in_the_body(
    fake, provider
):
    fake.queue(Reply(input_tokens=4321))
    response = await provider.send(target=target(fake, model=DATED_MODEL), call=call(count=True))
    assert response.status == 200
    assert orjson.loads(await drain(response)) == {"input_tokens": 4321}
    received = fake.received[0]
    assert (received.model, received.method) == ("count-tokens", "rawPredict")
    assert received.json["model"] == DATED_MODEL
    assert received.json["anthropic_version"] == "vertex-2023-10-16"


async def test_only_betas_reach_vertex_and_anthropic_only_ones_are_dropped(fake, provider):
    headers = {
        "anthropic-beta": "interleaved-thinking-2025-05-14, oauth-2025-04-20,context-1m-2025-08-07",
        "x-goog-user-project": "someone-elses-project",
        "x-app": "cli",
    }
    await drain(await provider.send(target=target(fake), call=call(headers=headers)))
    sent = {name.lower(): value for name, value in fake.received[0].headers.items()}
    assert sent["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    assert "x-goog-user-project" not in sent and "x-app" not in sent


def test_a_quota_project_is_sent_as_x_goog_user_project():
    token = AccessToken("ya29.t", project_id="p", quota_project_id="billing-project")
    headers = request_headers(call(), token)
    assert headers["authorization"] == "Bearer ya29.t"
    assert headers["x-goog-user-project"] == "billing-project"


async def test_a_stream_error_event_reaches_the_tally(fake, provider):
    fake.queue(Reply(stream_error_after=1))
    tally = UsageTally()
    tally.feed_sse(await drain(await provider.send(target=target(fake), call=call(stream=True))))
    assert tally.error_type == "overloaded_error" and not tally.completed


async def test_a_dropped_stream_surfaces_as_a_read_error(fake, provider):
    fake.queue(Reply(drop_after=1, text=" ".join(["word"] * 50), deltas=10))
    response = await provider.send(target=target(fake), call=call(stream=True))
    assert response.status == 200
    with pytest.raises(READ_ERRORS):
        await drain(response)


# --- endpoints -------------------------------------------------------------------------------


def config(region: str, base_url: str = "") -> ProviderConfig:
    return ProviderConfig("v", "vertex", base_url, region, {}, {})


MODEL_PATH = "projects/p-1/locations/{}/publishers/anthropic/models/claude-opus-4-6:rawPredict"


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("global", "https://aiplatform.googleapis.com/v1"),
        ("us-east5", "https://us-east5-aiplatform.googleapis.com/v1"),
        ("europe-west1", "https://europe-west1-aiplatform.googleapis.com/v1"),
        ("us", "https://aiplatform.us.rep.googleapis.com/v1"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com/v1"),
    ],
)
def test_locations_map_to_googles_endpoints(region, host):
    url = predict_url(
        config(region), project="p-1", region=region, model="claude-opus-4-6", method="rawPredict"
    )
    assert url == f"{host}/{MODEL_PATH.format(region)}"


@pytest.mark.parametrize(
    "base_url",
    [
        "https://vertex.internal.example",
        "https://vertex.internal.example/",
        "https://vertex.internal.example/v1",
    ],
)
def test_base_url_replaces_the_public_host_and_keeps_the_path(base_url):
    url = predict_url(
        config("us-east5", base_url),
        project="p-1",
        region="us-east5",
        model="claude-opus-4-6",
        method="rawPredict",
    )
    assert url == f"https://vertex.internal.example/v1/{MODEL_PATH.format('us-east5')}"


async def test_an_empty_region_means_the_global_endpoint(fake, provider):
    await send_ok(provider, target(fake, region=""))
    assert fake.received[0].location == "global"


async def test_a_base_url_written_with_v1_reaches_the_same_path(fake, provider):
    await send_ok(provider, target(fake, base_url=fake.base_url + "/v1/"))
    assert fake.received[0].path.startswith(f"/v1/projects/{fake.project}/locations/us-east5/")


@pytest.mark.parametrize("region", ["us-east5.evil.example/x", "US_EAST", "a" * 60])
async def test_a_region_that_is_not_a_location_name_is_refused(fake, provider, region):
    with pytest.raises(VertexMisconfigured):
        await provider.send(target=target(fake, region=region), call=call())
    assert fake.received == [] and fake.token_requests == 0


@pytest.mark.parametrize(
    "model", ["../../../locations/x", "claude:streamRawPredict", "a/b", "a?b", "a#b"]
)
async def test_model_names_that_would_leave_the_model_resource_are_refused(fake, provider, model):
    response = await provider.send(target=target(fake, model=model), call=call())
    assert response.status == 404
    assert orjson.loads(await drain(response))["error"]["type"] == "not_found_error"
    assert fake.received == [] and fake.token_requests == 0


async def test_a_client_model_passed_through_by_a_pattern_route_is_checked_too(fake, provider):
    parsed = {"model": "claude-x/../../../../v1/projects/other", "max_tokens": 8, "messages": []}
    passed = UpstreamCall("/v1/messages", "", orjson.dumps(parsed), parsed, {}, stream=False)
    response = await provider.send(target=target(fake, model=""), call=passed)
    assert response.status == 404
    assert fake.received == [] and fake.token_requests == 0


async def test_a_project_id_that_is_not_one_is_refused(fake, provider):
    with pytest.raises(VertexMisconfigured):
        await provider.send(target=target(fake, settings={"project_id": "p/../x"}), call=call())
    assert fake.received == []


async def test_the_project_comes_from_the_service_account_when_settings_have_none(fake, provider):
    await send_ok(provider, target(fake, settings={}))
    assert fake.received[0].project == fake.project


# --- tokens ----------------------------------------------------------------------------------


async def test_the_token_is_fetched_once_and_reused(fake, provider):
    config = target(fake)
    for _ in range(3):
        await send_ok(provider, config)
    assert fake.token_requests == 1
    assert bearer_tokens(fake) == [fake.tokens[0]] * 3


async def test_concurrent_requests_share_one_refresh(fake, provider):
    config = target(fake)
    await asyncio.gather(*(send_ok(provider, config) for _ in range(12)))
    assert fake.token_requests == 1
    assert set(bearer_tokens(fake)) == {fake.tokens[0]}


async def test_the_token_is_refreshed_minutes_before_it_expires(fake, provider, clock):
    config = target(fake)  # an hour-long token, refreshed 5 minutes ahead
    await send_ok(provider, config)
    clock.now += 3290
    await send_ok(provider, config)
    clock.now += 20  # 3310 s in: 290 s before expiry
    await send_ok(provider, config)
    assert fake.token_requests == 2
    assert bearer_tokens(fake) == [fake.tokens[0], fake.tokens[0], fake.tokens[1]]


async def test_a_short_lived_token_is_reused_for_half_its_life(fake, provider, clock):
    fake.expires_in = 120
    config = target(fake)
    await send_ok(provider, config)
    clock.now += 50
    await send_ok(provider, config)
    clock.now += 20
    await send_ok(provider, config)
    assert bearer_tokens(fake) == [fake.tokens[0], fake.tokens[0], fake.tokens[1]]


async def test_the_refresh_runs_off_the_event_loop(fake, provider):
    fake.token_gate = threading.Event()
    sending = asyncio.create_task(send_ok(provider, target(fake)))
    for _ in range(500):  # the loop keeps turning while the token request is held
        if fake.token_requests:
            break
        await asyncio.sleep(0.01)
    fake.token_gate.set()
    await sending
    assert fake.gate_opened == [True]


async def test_a_failed_refresh_keeps_the_token_while_it_lasts(fake, provider, clock):
    config = target(fake)
    await send_ok(provider, config)
    clock.now += 3400  # due for refresh, 200 s left
    fake.token_failures.extend([400, 400])
    await send_ok(provider, config)
    await send_ok(provider, config)  # right after a failure: no new attempt
    assert fake.token_requests == 2
    clock.now += 300  # expired, and the token endpoint still refuses
    with pytest.raises(TokenUnavailable):
        await provider.send(target=config, call=call())
    assert bearer_tokens(fake) == [fake.tokens[0]] * 3


async def test_a_token_endpoint_refusal_fails_over_like_an_unreachable_deployment(fake, provider):
    fake.token_failures.append(400)
    with pytest.raises(TokenUnavailable) as raised:
        await provider.send(target=target(fake), call=call())
    assert isinstance(raised.value, OSError)  # forwarding tries the next deployment
    assert fake.received == []


async def test_a_revoked_token_is_replaced_and_the_request_sent_again(fake, provider):
    config = target(fake)
    await send_ok(provider, config)
    fake.revoke_tokens()
    await send_ok(provider, config)
    await send_ok(provider, config)
    assert fake.refused == ["bearer token"]
    assert bearer_tokens(fake) == [fake.tokens[0], fake.tokens[1], fake.tokens[1]]


async def test_a_token_refused_twice_is_answered_as_a_credential_failure(fake, provider):
    fake.refuse_tokens = True
    response = await provider.send(target=target(fake), call=call())
    body = orjson.loads(await drain(response))
    assert response.status == 401 and body["error"]["type"] == "authentication_error"
    assert fake.refused == ["bearer token", "bearer token"] and fake.token_requests == 2


async def test_a_key_the_fake_does_not_trust_gets_no_token(fake, provider):
    credentials = key_of(fake)
    fake._keys["gateway@fake-project.iam.gserviceaccount.com"] = rsa.generate_private_key(
        public_exponent=65537,
        key_size=1024,  # noqa: S505  # never used to sign: only to be the wrong key, fast
    ).public_key()
    with pytest.raises(TokenUnavailable):
        await provider.send(target=target(fake, credentials=credentials), call=call())
    assert fake.refused == ["invalid JWT signature"] and fake.received == []


async def test_application_default_credentials_serve_without_a_key(
    fake, provider, monkeypatch, tmp_path
):
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(fake.service_account(project="adc-project")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    fake.project = "adc-project"
    await send_ok(provider, target(fake, credentials={}, settings={}))
    assert fake.token_requests == 1 and fake.received[0].project == "adc-project"


async def test_no_credentials_anywhere_fails_over(fake, provider):
    with pytest.raises(TokenUnavailable):
        await provider.send(target=target(fake, credentials={}), call=call())
    assert fake.received == []


async def test_a_token_uri_outside_the_allowed_networks_is_never_called(fake, provider):
    account = fake.service_account()
    account["token_uri"] = "http://169.254.169.254/token"
    credentials = {"service_account_json": json.dumps(account)}
    with pytest.raises(TokenUnavailable, match="not an allowed destination"):
        await provider.send(target=target(fake, credentials=credentials), call=call())
    assert fake.token_requests == 0


async def test_the_token_uri_is_checked_again_before_each_refresh(fake, provider, clock, settings):
    config = target(fake)
    await send_ok(provider, config)
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []  # 127.0.0.1 is no longer allowed
    clock.now += 3700
    with pytest.raises(TokenUnavailable, match="not an allowed destination"):
        await provider.send(target=config, call=call())
    assert fake.token_requests == 1


async def test_a_token_endpoint_redirect_is_not_followed(fake, provider):
    fake.token_redirect = "/token"
    with pytest.raises(TokenUnavailable):
        await provider.send(target=target(fake), call=call())
    assert fake.token_requests == 1


@pytest.mark.parametrize("broken", ["{not json", "[]", '{"type": "service_account"}'])
async def test_a_broken_key_is_refused_without_quoting_it(fake, provider, broken):
    credentials = {"service_account_json": broken}
    with pytest.raises(TokenUnavailable) as raised:
        await provider.send(target=target(fake, credentials=credentials), call=call())
    assert broken not in str(raised.value)
    assert fake.token_requests == 0


async def test_a_changed_key_gets_its_own_token(fake, provider):
    await send_ok(provider, target(fake))
    await send_ok(provider, target(fake, credentials=key_of(fake, email="rotated@p.iam")))
    assert fake.token_requests == 2


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "error_type"),
    [
        (Reply(status=429, google_status="RESOURCE_EXHAUSTED"), 429, "rate_limit_error"),
        (Reply(status=429, error_as_list=True), 429, "rate_limit_error"),
        (Reply(status=503, google_status="UNAVAILABLE"), 529, "overloaded_error"),
        (Reply(status=404, google_status="NOT_FOUND"), 404, "not_found_error"),
        (Reply(status=400, google_status="INVALID_ARGUMENT"), 400, "invalid_request_error"),
        (Reply(status=400, google_status="FAILED_PRECONDITION"), 400, "invalid_request_error"),
        (Reply(status=500, google_status="INTERNAL"), 500, "api_error"),
        (Reply(status=504, google_status="DEADLINE_EXCEEDED"), 504, "timeout_error"),
        (Reply(status=403, google_status="PERMISSION_DENIED"), 403, "permission_error"),
        (Reply(status=502, plain_error=b"<html>Bad Gateway</html>"), 502, "api_error"),
        (Reply(status=503, plain_error=b"<html>Unavailable</html>"), 529, "overloaded_error"),
        (Reply(status=529, anthropic_error="overloaded_error"), 529, "overloaded_error"),
    ],
)
async def test_vertex_errors_are_answered_as_anthropic_would(
    fake, provider, reply, status, error_type
):
    fake.queue(reply)
    response = await provider.send(target=target(fake), call=call())
    body = orjson.loads(await drain(response))
    assert (response.status, response.content_type) == (status, "application/json")
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["error"]["message"]


async def test_an_anthropic_error_passed_on_by_vertex_keeps_its_message(fake, provider):
    fake.queue(
        Reply(
            status=400, anthropic_error="invalid_request_error", error_message="prompt is too long"
        )
    )
    response = await provider.send(target=target(fake), call=call())
    body = orjson.loads(await drain(response))
    assert response.status == 400
    assert body["error"] == {"type": "invalid_request_error", "message": "prompt is too long"}


def test_googles_wording_of_a_credential_refusal_is_not_passed_on():
    payload = orjson.dumps(
        {
            "error": {
                "code": 403,
                "message": "Permission denied for sa@secret-project.iam on projects/secret-project",
                "status": "PERMISSION_DENIED",
            }
        }
    )
    failure = failure_of(403, payload)
    assert failure.status == 403 and "secret-project" not in failure.message


def test_a_redirect_is_an_api_error():
    assert failure_of(302, b"").status == 502


# --- through the forwarding code --------------------------------------------------------------


async def test_exhausted_quota_fails_over_and_the_stream_is_metered_exactly(fake, provider):
    fake.queue(Reply(status=429, google_status="RESOURCE_EXHAUSTED"), CACHED)
    order = [target(fake, name="vertex-east"), target(fake, name="vertex-global", region="global")]
    outcome, sent = await run_forward({"vertex": provider}, order, call(stream=True))
    assert (sent.status, outcome.attempts, outcome.provider) == (200, 2, "vertex-global")
    assert_cached_usage(outcome.tally)
    assert [r.location for r in fake.received] == ["us-east5", "global"]


async def test_a_credential_refusal_reaches_the_client_as_a_gateway_error(fake, provider):
    fake.queue(Reply(status=403, google_status="PERMISSION_DENIED"))
    _, sent = await run_forward({"vertex": provider}, [target(fake)], call())
    assert sent.status == 502
    assert orjson.loads(sent.body)["error"]["type"] == "api_error"
