"""Which virtual key a request presents, the failed-authentication guard, and attribution."""

from __future__ import annotations

import orjson
import pytest

from proxy.attribution import MAX_ID_LENGTH, attribute, session_from_metadata
from proxy.auth import presented_secret
from proxy.runtime import AuthFailureGuard

GW_A = "sk-gw-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
GW_B = "sk-gw-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
PROVIDER_KEY = "test-stale-provider-credential"
SESSION = "3e555f99-4b6f-47a6-a0fe-46e2b5f2c44a"

# --- presented_secret ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, ""),
        ({"x-api-key": GW_A}, GW_A),
        ({"x-api-key": f"  {GW_A}  "}, GW_A),
        ({"authorization": f"Bearer {GW_A}"}, GW_A),
        ({"authorization": f"bearer {GW_A}"}, GW_A),
        ({"authorization": f"BEARER   {GW_A} "}, GW_A),
        ({"authorization": f"Basic {GW_A}"}, ""),
        ({"authorization": "Bearer"}, ""),
        ({"authorization": "Bearer "}, ""),
        ({"x-api-key": "", "authorization": f"Bearer {GW_A}"}, GW_A),
    ],
)
def test_key_is_read_from_x_api_key_or_bearer(headers: dict[str, str], expected: str) -> None:
    assert presented_secret(headers) == expected


def test_same_key_in_both_headers_is_that_key() -> None:
    assert presented_secret({"x-api-key": GW_A, "authorization": f"Bearer {GW_A}"}) == GW_A


def test_x_api_key_wins_when_both_headers_hold_gateway_keys() -> None:
    assert presented_secret({"x-api-key": GW_A, "authorization": f"Bearer {GW_B}"}) == GW_A


def test_bearer_wins_when_only_it_holds_a_gateway_key() -> None:
    """Claude Code with a stale ANTHROPIC_API_KEY and the gateway key in ANTHROPIC_AUTH_TOKEN."""
    headers = {"x-api-key": PROVIDER_KEY, "authorization": f"Bearer {GW_A}"}

    assert presented_secret(headers) == GW_A


def test_x_api_key_wins_when_only_it_holds_a_gateway_key() -> None:
    headers = {"x-api-key": GW_A, "authorization": f"Bearer {PROVIDER_KEY}"}

    assert presented_secret(headers) == GW_A


def test_x_api_key_wins_when_neither_looks_like_a_gateway_key() -> None:
    headers = {"x-api-key": "one-key", "authorization": "Bearer other-key"}

    assert presented_secret(headers) == "one-key"


# --- AuthFailureGuard ----------------------------------------------------------------------


@pytest.fixture
def minute(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The guard's clock, pinned to the start of a minute; tests move it by editing [0]."""
    now = [1_800_000_000.0]
    monkeypatch.setattr("proxy.runtime.time.time", lambda: now[0])
    return now


def test_address_is_blocked_after_the_limit_of_failures_in_a_minute(minute: list[float]) -> None:
    guard = AuthFailureGuard(limit=3)
    for _ in range(2):
        guard.record_failure("10.0.0.1")
    assert not guard.blocked("10.0.0.1")

    guard.record_failure("10.0.0.1")

    assert guard.blocked("10.0.0.1")
    assert not guard.blocked("10.0.0.2")


def test_block_lifts_in_the_next_minute(minute: list[float]) -> None:
    guard = AuthFailureGuard(limit=2)
    guard.record_failure("10.0.0.1")
    guard.record_failure("10.0.0.1")
    assert guard.blocked("10.0.0.1")

    minute[0] += 60

    assert not guard.blocked("10.0.0.1")
    guard.record_failure("10.0.0.1")
    assert not guard.blocked("10.0.0.1")  # counting starts again in the new minute


def test_guard_memory_is_bounded(minute: list[float]) -> None:
    guard = AuthFailureGuard(limit=1)
    for number in range(100_002):
        guard.record_failure(f"addr-{number}")

    assert len(guard._addresses) <= 100_001
    assert guard.blocked("addr-100001")


# --- attribution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "client"),
    [
        ("claude-cli/2.1.332 (external, sdk-cli)", ("claude-cli", "2.1.332")),
        ("claude-cli/2.1.197 (external, cli)", ("claude-cli", "2.1.197")),
        ("Anthropic/Python 2.14.0", ("Anthropic/Python", "2.14.0")),
        ("Anthropic/JS 0.128.0", ("Anthropic/JS", "0.128.0")),
        ("OpenAI/Python 3.57.0", ("OpenAI/Python", "3.57.0")),
        ("python-httpx/0.28.1", ("python-httpx", "0.28.1")),
        ("Bun/1.4.6", ("Bun", "1.4.6")),
        ("curl/8.5.0", ("curl", "8.5.0")),
        ("my.tool/1.0.0-rc.1+build.5 extra", ("my.tool", "1.0.0-rc.1+build.5")),
        ("", ("", "")),
        ("garbage", ("", "")),
        ("/1.0", ("", "")),
        ("é/1.0", ("", "")),
    ],
)
def test_client_and_version_come_from_the_user_agent(
    user_agent: str, client: tuple[str, str]
) -> None:
    found = attribute({"user-agent": user_agent}, None)

    assert (found.client_name, found.client_version) == client


def test_long_user_agent_parts_are_clipped_to_the_ledger_columns() -> None:
    found = attribute({"user-agent": "a" * 200 + "/" + "1" * 200}, None)

    assert (len(found.client_name), len(found.client_version)) == (60, 40)


def test_session_and_agents_come_from_claude_code_headers() -> None:
    found = attribute(
        {
            "x-claude-code-session-id": SESSION,
            "x-claude-code-agent-id": "a0123456789abcdef",
            "x-claude-code-parent-agent-id": "afedcba9876543210",
        },
        {"user_id": orjson.dumps({"session_id": "other"}).decode()},
    )

    assert (found.session_id, found.agent_id, found.parent_agent_id) == (
        SESSION,
        "a0123456789abcdef",
        "afedcba9876543210",
    )


def test_session_falls_back_to_metadata_user_id_json_string() -> None:
    user_id = orjson.dumps(
        {"device_id": "f" * 64, "account_uuid": "", "session_id": SESSION}
    ).decode()

    assert attribute({}, {"user_id": user_id}).session_id == SESSION


def test_header_values_are_clipped() -> None:
    found = attribute({"x-claude-code-session-id": "s" * 500}, None)

    assert len(found.session_id) == MAX_ID_LENGTH


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "a string",
        [],
        {},
        {"user_id": None},
        {"user_id": 42},
        {"user_id": "user_abc123"},
        {"user_id": "{not json"},
        {"user_id": "[1, 2]"},
        {"user_id": '{"session_id": 5}'},
        {"user_id": '{"device_id": "x"}'},
    ],
)
def test_missing_or_garbage_metadata_gives_no_session(metadata: object) -> None:
    assert session_from_metadata(metadata) == ""
    assert attribute({}, metadata).session_id == ""


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize("flags", ["01", "00", "ff"])
def test_a_valid_traceparent_is_kept_for_the_span(flags: str) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-{flags}"

    assert attribute({"traceparent": traceparent}, None).traceparent == traceparent


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # hex must be lower case
        f"01-{TRACE_ID}-{PARENT_ID}-01",  # only version 00 is understood
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f"00-{TRACE_ID}-{PARENT_ID}",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f" 00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}-01,00-{TRACE_ID}-{PARENT_ID}-01",  # header sent twice
    ],
)
def test_a_malformed_traceparent_is_ignored(traceparent: str) -> None:
    assert attribute({"traceparent": traceparent}, None).traceparent == ""
