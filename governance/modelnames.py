"""Canonical model ids: what model policies and tier budgets are matched against.

Clients and routes name one model in many ways: "claude-opus-4-6", "claude-opus-4-6-20260205",
"anthropic/claude-opus-4-6", "us.anthropic.claude-opus-4-6-v1:0", "claude-opus-4-6@20260205".
Rules match the canonical id as well as the name as written, so an alias, a dated snapshot
or a provider id cannot slip past a rule written for the model.
"""

from __future__ import annotations

import functools
import re

from governance.pricing import normalize_model_id

_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{8}|latest)$")


@functools.lru_cache(maxsize=4096)  # model names come from clients: bounded
def canonical_model(model: str) -> str:
    """The provider-neutral id without a snapshot date: "claude-opus-4-6" for all of the above."""
    return _SNAPSHOT_SUFFIX.sub("", normalize_model_id(model)) or model


def names_of(model: str) -> tuple[str, ...]:
    """The name as written and, when it differs, its canonical id."""
    canonical = canonical_model(model)
    return (model,) if canonical == model else (model, canonical)
