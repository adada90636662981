"""A fast fake OpenAI-compatible server for benchmarks: `POST /v1/chat/completions` in microseconds.

Built like fake_upstream.py (a bare asyncio protocol, every response precomputed): a chat
completion as JSON, or, when the body asks for `"stream":true`, OpenAI's SSE in chunked encoding:
a role chunk, content deltas, a chunk with the finish_reason, then (when the body asks for
`"include_usage":true`, as the gateway always does) the usage chunk with `choices: []`, then
`data: [DONE]`. Usage counts a warm prompt cache the OpenAI way (cached tokens are part of
prompt_tokens). Headers as OpenAI sends them: x-request-id and the x-ratelimit-* set, which the
gateway translates to Anthropic's names on every answer.

Run: python benchmarks/fake_openai.py --port 8998 [--model llama-3.3-70b-versatile]
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fake_upstream import LAST_CHUNK, NOT_FOUND, TEXT, arguments, chunk, serve, streams

MODEL = "llama-3.3-70b-versatile"
CREATED = 1_764_201_600  # fixed: the bytes are built once
COMPLETION_ID = "chatcmpl-bench-fake-upstream"
# The Anthropic fake's turn in OpenAI's terms: prompt = input + cache write + cache read,
# of which the cache read is cached.
CACHED = 1_420
PROMPT_TOKENS = 12 + 310 + CACHED
COMPLETION_TOKENS = 48
HEADERS = (
    b"x-request-id: req_bench_fake_openai\r\n"
    b"openai-processing-ms: 1\r\n"
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\n"
    b"x-ratelimit-limit-tokens: 30000000\r\n"
    b"x-ratelimit-remaining-tokens: 29985000\r\n"
    b"x-ratelimit-reset-tokens: 30ms\r\n"
)


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion(model: str) -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(),
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }


def stream_chunks(model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chunks of one streamed completion, and the include_usage chunk that may follow."""

    def chunk_of(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    words = TEXT.split(" ")
    deltas = [" ".join(words[i : i + 4]) + " " for i in range(0, len(words), 4)]
    chunks = [chunk_of({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk_of({"content": d}) for d in deltas]
    chunks.append(chunk_of({}, "stop"))
    last = {**chunk_of({}), "choices": [], "usage": usage()}
    return chunks, last


def _data(value: object) -> bytes:
    return b"data: " + _dumps(value) + b"\n\n"


class OpenAIAnswers:
    """Every response byte string, built once."""

    def __init__(self, model: str) -> None:
        body = _dumps(completion(model))
        self.json = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (HEADERS, len(body), body)
        )
        chunks, usage_chunk = stream_chunks(model)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\n%stransfer-encoding: chunked\r\n\r\n" % HEADERS
        )
        self.sse_first = head + chunk(_data(chunks[0]))
        rest = [chunk(_data(c)) for c in chunks[1:]]
        done = chunk(b"data: [DONE]\n\n") + LAST_CHUNK
        self.sse_rest_usage = b"".join(rest) + chunk(_data(usage_chunk)) + done
        self.sse_rest = b"".join(rest) + done

    def answer(self, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        if not head.startswith(b"POST /v1/chat/completions"):
            return NOT_FOUND, b""
        if not streams(body):
            return self.json, b""
        wants_usage = b'"include_usage":true' in body or b'"include_usage": true' in body
        return self.sse_first, self.sse_rest_usage if wants_usage else self.sse_rest


def main() -> None:
    args = arguments(__doc__, MODEL)
    asyncio.run(serve(args.host, args.port, OpenAIAnswers(args.model), "fake OpenAI upstream"))


if __name__ == "__main__":
    main()
