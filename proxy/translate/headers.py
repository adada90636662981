"""Rate-limit headers between the two APIs (PROTOCOLS 3.6): converted, never copied.

OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as durations ("6ms",
"1s", "6m0s"). Anthropic: `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`,
resets as RFC 3339 times. `retry-after` means the same on both sides and is not handled here.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KINDS = ("requests", "tokens")


def openai_ratelimit_headers_to_anthropic(
    headers: Mapping[str, str], *, now: dt.datetime
) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    result: dict[str, str] = {}
    for kind in _KINDS:
        for field in ("limit", "remaining"):
            value = lowered.get(f"x-ratelimit-{field}-{kind}", "").strip()
            if value.isdigit():
                result[f"anthropic-ratelimit-{kind}-{field}"] = value
        seconds = parse_duration(lowered.get(f"x-ratelimit-reset-{kind}", ""))
        if seconds is not None:
            at = now + dt.timedelta(seconds=math.ceil(seconds))
            result[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(at)
    return result


def anthropic_ratelimit_headers_to_openai(
    headers: Mapping[str, str], *, now: dt.datetime
) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    result: dict[str, str] = {}
    for kind in _KINDS:
        for field in ("limit", "remaining"):
            value = lowered.get(f"anthropic-ratelimit-{kind}-{field}", "").strip()
            if value.isdigit():
                result[f"x-ratelimit-{field}-{kind}"] = value
        reset = _parse_time(lowered.get(f"anthropic-ratelimit-{kind}-reset", ""))
        if reset is not None:
            seconds = max((reset - now).total_seconds(), 0.0)
            result[f"x-ratelimit-reset-{kind}"] = format_duration(seconds)
    return result


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI reset duration ("1m30.5s", "250ms"), or None."""
    text = text.strip()
    if not text or _DURATION_PART.sub("", text):
        return None
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    millis = math.ceil(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    minutes, millis = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{millis / 1000:g}s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _parse_time(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _rfc3339(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
