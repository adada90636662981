"""The admin index warns about requests recorded at an estimated cost (models with no price)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.telemetry.usage_events import event, write

pytestmark = pytest.mark.django_db


def test_admin_index_names_models_served_at_an_estimated_cost(admin_client):
    now = timezone.now()
    write(
        {**event(now, cost=900), "served_model": "claude-nova-1", "cost_estimated": True},
        {**event(now, cost=900), "served_model": "claude-nova-1", "cost_estimated": True},
        {**event(now, cost=100), "served_model": "claude-sonnet-4-6"},
    )

    page = admin_client.get("/admin/").content.decode()

    assert 'id="estimated-cost-warning"' in page
    assert "<code>claude-nova-1</code> (2 requests)" in page
    assert "claude-sonnet-4-6" not in page.split('id="estimated-cost-warning"')[1][:600]


def test_no_warning_without_recent_estimated_costs(admin_client):
    old = timezone.now() - dt.timedelta(days=8)
    write({**event(old, cost=900), "served_model": "claude-nova-1", "cost_estimated": True})

    assert 'id="estimated-cost-warning"' not in admin_client.get("/admin/").content.decode()
