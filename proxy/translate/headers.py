"""Rate-limit headers between the two APIs (PROTOCOLS 3.6): converted, never copied.

OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as durations ("6ms",
"1s", "6m0s"). Anthropic: `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`,
resets as RFC 3339 times. `retry-after` means the same on both sides and is not handled here.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KINDS = ("requests", "tokens")
_OPENAI = "x-ratelimit-{field}-{kind}"
_ANTHROPIC = "anthropic-ratelimit-{kind}-{field}"


def openai_ratelimit_headers_to_anthropic(
    headers: Mapping[str, str], *, now: dt.datetime
) -> dict[str, str]:
    def reset(text: str) -> str | None:
        seconds = parse_duration(text)
        if seconds is None:
            return None
        return _rfc3339(now + dt.timedelta(seconds=math.ceil(seconds)))

    return _converted(headers, _OPENAI, _ANTHROPIC, reset)


def anthropic_ratelimit_headers_to_openai(
    headers: Mapping[str, str], *, now: dt.datetime
) -> dict[str, str]:
    def reset(text: str) -> str | None:
        at = _parse_time(text)
        return None if at is None else format_duration(max((at - now).total_seconds(), 0.0))

    return _converted(headers, _ANTHROPIC, _OPENAI, reset)


def _converted(
    headers: Mapping[str, str], source: str, target: str, reset: Callable[[str], str | None]
) -> dict[str, str]:
    """The limit and remaining counts copied from `source` names to `target` names (templates
    with {kind} and {field}), and each reset in the target's form by `reset`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    result: dict[str, str] = {}
    for kind in _KINDS:
        for field in ("limit", "remaining"):
            value = lowered.get(source.format(kind=kind, field=field), "").strip()
            if value.isdigit():
                result[target.format(kind=kind, field=field)] = value
        converted = reset(lowered.get(source.format(kind=kind, field="reset"), ""))
        if converted is not None:
            result[target.format(kind=kind, field="reset")] = converted
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
