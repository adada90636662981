"""UsageTally: what a response is billed for, from JSON bodies and SSE streams (PROTOCOLS 1.4)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from governance.pricing import Usage
from proxy.metering import UsageTally


def frame(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def message_start(usage: dict[str, Any], **message: Any) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
            "stop_reason": None,
            "usage": usage,
            **message,
        },
    }


def message_delta(usage: dict[str, Any], stop_reason: str | None = "end_turn") -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage,
    }


def text_events(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
    ]


START_USAGE = {
    "input_tokens": 100,
    "output_tokens": 1,
    "cache_creation_input_tokens": 30,
    "cache_read_input_tokens": 20,
    "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
}

# A full stream: the start, text that mentions the event names, two cumulative deltas.
STREAM = b"".join(
    frame(e)
    for e in [
        message_start(START_USAGE),
        *text_events('he said "message_delta" and "error": {"output_tokens": 999}'),
        message_delta({"output_tokens": 50}, stop_reason=None),
        message_delta({"output_tokens": 70, "input_tokens": None}),
        {"type": "message_stop"},
    ]
)
STREAM_USAGE = Usage(
    input_tokens=100,
    output_tokens=70,
    cache_write_5m_tokens=10,
    cache_write_1h_tokens=20,
    cache_read_tokens=20,
)


def tally_of(*chunks: bytes) -> UsageTally:
    tally = UsageTally()
    for chunk in chunks:
        tally.feed_sse(chunk)
    return tally


def test_whole_stream_is_billed_from_start_and_last_delta() -> None:
    tally = tally_of(STREAM)

    assert tally.usage() == STREAM_USAGE
    assert (tally.model, tally.upstream_message_id) == ("claude-sonnet-4-6", "msg_01")
    assert (tally.stop_reason, tally.completed, tally.error_type) == ("end_turn", True, "")


def test_stream_fed_byte_by_byte_gives_the_same_usage() -> None:
    tally = tally_of(*(STREAM[i : i + 1] for i in range(len(STREAM))))

    assert tally.usage() == STREAM_USAGE
    assert tally.completed


@pytest.mark.parametrize("seed", range(20))
def test_stream_split_at_random_boundaries_gives_the_same_usage(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), 12))
    chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]

    assert tally_of(*chunks).usage() == STREAM_USAGE


def test_stream_with_crlf_line_endings_is_metered() -> None:
    """SSE allows CRLF line endings; a proxy in between may use them."""
    crlf = STREAM.replace(b"\n", b"\r\n")

    assert tally_of(crlf).usage() == STREAM_USAGE
    assert tally_of(*(crlf[i : i + 1] for i in range(len(crlf)))).usage() == STREAM_USAGE


def test_delta_values_overwrite_and_never_add() -> None:
    tally = tally_of(
        frame(message_start({"input_tokens": 10, "output_tokens": 1})),
        frame(message_delta({"output_tokens": 5})),
        frame(message_delta({"output_tokens": 8, "input_tokens": 12})),
    )

    assert (tally.input_tokens, tally.output_tokens) == (12, 8)


def test_null_or_missing_delta_values_keep_the_previous_ones() -> None:
    tally = tally_of(
        frame(message_start(START_USAGE)),
        frame(
            message_delta(
                {
                    "output_tokens": 9,
                    "input_tokens": None,
                    "cache_read_input_tokens": None,
                    "cache_creation_input_tokens": None,
                }
            )
        ),
    )

    assert tally.usage() == Usage(
        input_tokens=100,
        output_tokens=9,
        cache_write_5m_tokens=10,
        cache_write_1h_tokens=20,
        cache_read_tokens=20,
    )


def test_cache_writes_are_split_into_five_minute_and_one_hour() -> None:
    tally = tally_of(frame(message_start(START_USAGE)))

    usage = tally.usage()
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (10, 20)
    assert usage.prompt_tokens == 150


def test_cache_writes_without_a_split_count_as_five_minute() -> None:
    tally = tally_of(
        frame(message_start({"input_tokens": 5, "cache_creation_input_tokens": 40})),
    )

    usage = tally.usage()
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (40, 0)


def test_one_hour_split_never_exceeds_the_cache_write_total() -> None:
    usage_in = {
        "cache_creation_input_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 9},
    }
    usage = tally_of(frame(message_start(usage_in))).usage()

    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (0, 5)


def test_stream_cut_short_bills_the_last_values_seen() -> None:
    tally = tally_of(
        frame(message_start({"input_tokens": 100, "output_tokens": 1})),
        frame(message_delta({"output_tokens": 40}, stop_reason=None)),
        b'event: message_delta\ndata: {"type": "message_delta", "usage": {"output_tok',
    )

    assert (tally.input_tokens, tally.output_tokens) == (100, 40)
    assert not tally.completed


def test_error_event_in_a_stream_is_recorded() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    tally = tally_of(frame(message_start({"input_tokens": 7, "output_tokens": 1})), frame(error))

    assert (tally.error_type, tally.error_message) == ("overloaded_error", "Overloaded")
    assert tally.input_tokens == 7
    assert not tally.completed


def test_error_event_without_details_is_an_api_error() -> None:
    tally = tally_of(b'event: error\ndata: {"type": "error", "error": "boom"}\n\n')

    assert tally.error_type == "api_error"


def test_json_message_body_is_metered() -> None:
    body = {
        "id": "msg_02",
        "type": "message",
        "model": "claude-haiku-4-5",
        "stop_reason": "max_tokens",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {**START_USAGE, "output_tokens": 33},
    }
    tally = UsageTally()
    tally.feed_json(orjson.dumps(body))

    assert tally.usage() == Usage(
        input_tokens=100,
        output_tokens=33,
        cache_write_5m_tokens=10,
        cache_write_1h_tokens=20,
        cache_read_tokens=20,
    )
    assert (tally.model, tally.upstream_message_id) == ("claude-haiku-4-5", "msg_02")
    assert (tally.stop_reason, tally.completed, tally.saw_usage) == ("max_tokens", True, True)


def test_json_error_body_is_recorded_without_usage() -> None:
    tally = UsageTally()
    tally.feed_json(
        b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}'
    )

    assert (tally.error_type, tally.error_message) == ("rate_limit_error", "slow down")
    assert tally.usage() == Usage()
    assert not tally.saw_usage and not tally.completed


@pytest.mark.parametrize(
    "chunk",
    [
        b"\xff\xfe\x00 not utf-8 \n\n",
        b"data: {not json\n\n",
        b"event: message_start\ndata: [1, 2, 3]\n\n",
        b'data: {"type": "message_start", "message": "a string"}\n\n',
        b'data: {"type": "message_start", "message": {"usage": [1]}}\n\n',
        b'data: {"type": "message_delta", "delta": 5, "usage": {"output_tokens": "12"}}\n\n',
        b'data: {"type": "message_delta", "usage": {"cache_creation": "x"}}\n\n',
        b'data: {"type": "error"}\n\n',
        b"data: " + b"[" * 100_000 + b"\n\n",
        b'data: {"type": "message_start", "message": {"usage": {"input_tokens": 1e400}}}\n\n',
        b"\n\n\n\n\n",
    ],
)
def test_garbage_stream_input_does_not_raise(chunk: bytes) -> None:
    tally = tally_of(chunk, chunk[:3], chunk[3:])

    assert tally.usage() == Usage()


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"[1, 2]", b"null", b'{"usage": "none"}', b"\xff\xfe"]
)
def test_garbage_json_body_does_not_raise(body: bytes) -> None:
    tally = UsageTally()
    tally.feed_json(body)

    assert tally.usage() == Usage()
