"""Load a price sheet (YAML) into versioned ModelPrice rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from governance.actors import Actor
from governance.models import AuditEvent, ModelPrice
from governance.money import MoneyError, usd_to_micros
from governance.services import audit, common

DEFAULT_PRICE_FILE = Path(__file__).resolve().parent.parent / "data" / "claude_prices.yaml"
RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


@dataclass(frozen=True, slots=True)
class PriceLoadResult:
    created: int
    updated: int
    unchanged: int


def load_price_file(*, path: Path, actor: Actor) -> PriceLoadResult:
    """Upsert every price in the file by (model pattern, effective_from); all or nothing."""
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(f"not valid YAML: {exc}") from exc
    return load_price_document(document=document, actor=actor, source=str(path))


def load_price_document(*, document: Any, actor: Actor, source: str = "") -> PriceLoadResult:
    if not isinstance(document, dict) or not isinstance(document.get("prices"), list):
        raise ValidationError("a price file needs a top-level `prices:` list")
    default_from = _parse_when(
        document.get("effective_from", "2025-01-01T00:00:00Z"), "effective_from"
    )
    created = updated = unchanged = 0
    with transaction.atomic():
        for index, entry in enumerate(document["prices"]):
            where = f"prices[{index}]"
            row = _row_from_entry(entry, default_from, where)
            existing = ModelPrice.objects.filter(
                model_pattern=row.model_pattern, effective_from=row.effective_from
            ).first()
            if existing is not None:
                row.pk, row.created_at = existing.pk, existing.created_at
                # An update, not an insert: otherwise full_clean reports the id as taken.
                row._state.adding = False
            wrote = common.save_instance(row, actor=actor, note=f"price sheet {source}".strip())
            if not wrote:
                unchanged += 1
            elif existing is None:
                created += 1
            else:
                updated += 1
        if created or updated:
            audit.record(
                actor=actor,
                verb=AuditEvent.Verb.PRICES_LOADED,
                subject_type="governance.ModelPrice",
                note=f"{source}: {created} created, {updated} updated, {unchanged} unchanged",
            )
    return PriceLoadResult(created=created, updated=updated, unchanged=unchanged)


def _parse_when(value: Any, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed: dt.datetime | None = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time(0))
    else:
        parsed = parse_datetime(str(value))
    if parsed is None:
        raise ValidationError(f"{where}: {value!r} is not a date-time (e.g. 2026-01-01T00:00:00Z)")
    # In UTC, as the database returns it: a version written as +01:00 must compare equal to
    # its stored row, or every reload would count it as updated.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _micros(entry: dict[str, Any], name: str, where: str) -> int:
    if name not in entry:
        raise ValidationError(f"{where}.{name} is required (USD per million tokens)")
    try:
        return usd_to_micros(entry[name])
    except MoneyError as exc:
        raise ValidationError(f"{where}.{name}: {exc}") from exc


def _threshold(value: Any, where: str) -> int:
    if isinstance(value, bool) or not str(value).isdigit() or int(value) <= 0:
        raise ValidationError(f"{where}.threshold: {value!r} is not a number of prompt tokens")
    return int(value)


def _row_from_entry(entry: Any, default_from: dt.datetime, where: str) -> ModelPrice:
    if not isinstance(entry, dict) or not entry.get("model"):
        raise ValidationError(f"{where}: each price needs a `model` (id or pattern)")
    row = ModelPrice(
        model_pattern=str(entry["model"]),
        effective_from=(
            _parse_when(entry["effective_from"], f"{where}.effective_from")
            if "effective_from" in entry
            else default_from
        ),
        note=str(entry.get("note", "")),
        **{f"{name}_per_mtok": _micros(entry, name, where) for name in RATE_FIELDS},
    )
    long_context = entry.get("long_context")
    if long_context is not None:
        lc_where = f"{where}.long_context"
        if not isinstance(long_context, dict) or "threshold" not in long_context:
            raise ValidationError(f"{lc_where} needs a `threshold` in prompt tokens")
        row.long_context_threshold = _threshold(long_context["threshold"], lc_where)
        for name in RATE_FIELDS:
            setattr(row, f"long_{name}_per_mtok", _micros(long_context, name, lc_where))
    return row
