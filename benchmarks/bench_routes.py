"""What the benchmark's providers and routes are, shared by seed.py (which creates them) and
run.py (which calls them, through the gateway and directly).

- anthropic: the client asks for claude-opus-5-5; the route `claude-*` sends it to the fake
  Anthropic upstream (fake_upstream.py) as is.
- openai: the client (still speaking Anthropic) asks for claude-haiku-4-5; the route
  `claude-haiku-*` sends it to an OpenAI-compatible provider (fake_openai.py) as
  llama-3.3-70b-versatile, translated both ways.
- bedrock: the client asks for claude-sonnet-4-6; the route `claude-sonnet-*` sends it to a
  Bedrock provider (fake_bedrock.py) as us.anthropic.claude-sonnet-4-6-v1:0, SigV4-signed.
"""

from __future__ import annotations

PROVIDERS = ("anthropic", "openai", "bedrock")
CLIENT_MODELS = {
    "anthropic": "claude-opus-5-5",
    "openai": "claude-haiku-4-5",
    "bedrock": "claude-sonnet-4-6",
}

ANTHROPIC_ROUTE = "claude-*"

OPENAI_ROUTE = "claude-haiku-*"
OPENAI_MODEL = "llama-3.3-70b-versatile"
OPENAI_API_KEY = "bench-openai-key-not-secret"
# What a Groq provider needs for Claude Code, which asks for up to 128,000 output tokens.
OPENAI_MAX_OUTPUT_TOKENS = 32_768
# Groq's list price for the model, USD per million tokens (no cache writes; cached input at
# half price): an OpenAI-compatible model must be priced to be governed.
OPENAI_PRICE = {
    "model": OPENAI_MODEL,
    "input": "0.59",
    "output": "0.79",
    "cache_write_5m": "0.59",
    "cache_write_1h": "0.59",
    "cache_read": "0.295",
    "note": "benchmark",
}

BEDROCK_ROUTE = "claude-sonnet-*"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6-v1:0"
BEDROCK_REGION = "us-east-1"
BEDROCK_VERSION = "bedrock-2023-05-31"
# Static keys that only the fake Bedrock sees (it does not check them): with static keys
# botocore signs every request and never looks for credentials anywhere else.
BEDROCK_CREDENTIALS = {
    "access_key_id": "BENCHFAKEACCESSKEYID",
    "secret_access_key": "bench-fake-secret-access-key-not-secret",
}
