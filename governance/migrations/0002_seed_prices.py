"""Seed the shipped Claude price sheet and the audit chain head.

Uses historical models and writes rows directly: later price sheets go through
`manage.py load_prices`, which audits every change.
"""

from __future__ import annotations

import datetime as dt

import yaml
from django.db import migrations
from django.utils.dateparse import parse_datetime

from governance.money import usd_to_micros
from governance.services.prices import DEFAULT_PRICE_FILE, RATE_FIELDS


def seed(apps, schema_editor):  # type: ignore[no-untyped-def]
    ModelPrice = apps.get_model("governance", "ModelPrice")
    AuditChainHead = apps.get_model("governance", "AuditChainHead")
    AuditChainHead.objects.get_or_create(pk=1, defaults={"last_hash": "0" * 64})
    document = yaml.safe_load(DEFAULT_PRICE_FILE.read_text())
    effective_from = parse_datetime(document["effective_from"]) or dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for entry in document["prices"]:
        fields = {f"{name}_per_mtok": usd_to_micros(entry[name]) for name in RATE_FIELDS}
        long_context = entry.get("long_context")
        if long_context:
            fields["long_context_threshold"] = long_context["threshold"]
            fields.update({f"long_{n}_per_mtok": usd_to_micros(long_context[n]) for n in RATE_FIELDS})
        ModelPrice.objects.update_or_create(
            model_pattern=entry["model"],
            effective_from=effective_from,
            defaults={**fields, "note": entry.get("note", "")},
        )


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
