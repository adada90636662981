"""Raw request log retention: delete ledger rows older than each organization's
`log_retention_days`, in batches. Rollups and audit events are kept for good.

Two things hold rows back past their retention:
- A row is deleted only once it was rolled up (its id is at or below the rollup watermark), so
  the spend it carries stays in the rollups.
- Rows of a budget's current period are kept: budget counters, period records and
  reconciliation are rebuilt from the ledger spend of the current period, so the organization's
  cutoff is never later than the start of the current period of any of its calendar budgets.
  Lifetime budgets do not hold rows back (that would keep them forever); a lifetime counter
  rebuilt after a Redis loss counts only the rows retention kept.

Rows of an organization that no longer exists get the default retention. Deleting is by
primary key in batches of BATCH_SIZE, each its own short transaction; two workers running this
at once delete disjoint or already-deleted ids, which is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Q, QuerySet
from django.utils import timezone

from governance import periods
from governance.models import Budget, Organization
from telemetry import rollups
from telemetry.models import UsageRecord

logger = logging.getLogger("gateway.retention")

BATCH_SIZE = 5_000


@dataclass
class RetentionRun:
    deleted: int = 0
    by_organization: dict[int, int] = field(default_factory=dict)


def default_retention_days() -> int:
    return int(Organization._meta.get_field("log_retention_days").get_default())


def organization_cutoff(
    org: Organization, budgets: Iterable[Budget], now: dt.datetime
) -> dt.datetime:
    """Rows created before this may go."""
    cutoff = now - dt.timedelta(days=org.log_retention_days)
    for budget in budgets:
        if budget.period == Budget.Period.LIFETIME:
            continue
        start = periods.window(budget.period, org.timezone, now).start
        if start is not None and start < cutoff:
            cutoff = start
    return cutoff


def enforce_retention(
    *,
    now: dt.datetime | None = None,
    organization_ids: Iterable[int] | None = None,
    batch_size: int = BATCH_SIZE,
) -> RetentionRun:
    """Delete expired ledger rows of every organization (or of `organization_ids`)."""
    now = now or timezone.now()
    watermark = rollups.cursor_position()
    result = RetentionRun()
    orgs = Organization.objects.order_by("id")
    if organization_ids is not None:
        orgs = orgs.filter(id__in=list(organization_ids))
    for org in orgs:
        cutoff = organization_cutoff(org, Budget.objects.filter(organization=org), now)
        rows = UsageRecord.objects.filter(organization_id=org.pk, created_at__lt=cutoff)
        deleted = _delete_in_batches(rows, watermark, batch_size)
        if deleted:
            result.by_organization[org.pk] = deleted
            result.deleted += deleted
            logger.info("retention: deleted %s ledger rows of organization %s", deleted, org.pk)
    if organization_ids is None:
        cutoff = now - dt.timedelta(days=default_retention_days())
        orphans = UsageRecord.objects.filter(created_at__lt=cutoff).filter(
            Q(organization_id__isnull=True)
            | ~Q(organization_id__in=Organization.objects.values("id"))
        )
        result.deleted += _delete_in_batches(orphans, watermark, batch_size)
    return result


def _delete_in_batches(rows: QuerySet[UsageRecord], watermark: int, batch_size: int) -> int:
    deleted = 0
    rows = rows.filter(id__lte=watermark)  # never a row the rollups have not counted yet
    while True:
        ids = list(rows.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = UsageRecord.objects.filter(id__in=ids).delete()
        deleted += count
