"""The policy-change outbox: every governance write reaches the gateways, even if Redis is down.

A write records a PolicyChange row in its own transaction, so the row commits (or rolls back)
with the change. After commit the pending rows are published: the shared policy version is
bumped, then the rows are marked published. When the bump fails (Redis down, version file not
writable) the change itself stays committed, a warning is logged and the rows stay pending;
the `policy_outbox` job (telemetry/scheduler.py, Celery beat) publishes them once the bump
works again. Gateways also reload every snapshot after GATEWAY_SNAPSHOT_MAX_AGE_SECONDS
(proxy/snapshots.py), which bounds how long a change can go unseen meanwhile.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from governance import policy
from governance.models import PolicyChange

logger = logging.getLogger("gateway.policy")

# One bump covers every change committed before it, so a run reads at most this many pending
# ids (a long Redis outage with a busy admin) and marks them in chunks small enough for any
# database's parameter limit.
MAX_PER_RUN = 10_000
CHUNK = 500
KEEP_PUBLISHED = dt.timedelta(days=1)


class _PublishAfterCommit:
    """The on-commit callback of one transaction; `ran` tells a spent one from a pending one."""

    def __init__(self, block: object) -> None:
        self.block = block  # the outermost atomic block of the transaction it belongs to
        self.ran = False

    def __call__(self) -> None:
        self.ran = True
        try:
            publish_pending()
        except Exception as exc:  # the change is committed: the caller must not see an error
            logger.warning(
                "policy change committed but not yet published (%s: %s); "
                "the policy_outbox job retries it",
                type(exc).__name__,
                exc,
            )


def _outermost_block() -> object | None:
    """The atomic block that opened the caller's transaction (None outside one).

    The blocks a test case wraps around each test are skipped: there the writes of one test
    share a database transaction that never commits, yet each stands for a transaction.
    """
    blocks = transaction.get_connection().atomic_blocks
    return next((block for block in blocks if not block._from_testcase), None)


def _registered_in(block: object) -> bool:
    """Whether this transaction already holds a pending change and its publisher.

    Django keeps a transaction's callbacks as (savepoint ids, callback, robust) and drops them
    when their savepoint or transaction rolls back, together with the row written beside them;
    so a registered, unspent publisher means the row is still there.
    """
    return any(
        isinstance(entry[1], _PublishAfterCommit) and entry[1].block is block and not entry[1].ran
        for entry in transaction.get_connection().run_on_commit
    )


def record_change() -> None:
    """Record a policy change in the caller's transaction; publish it after commit.

    Several writes in one transaction share one row and one bump. Outside a transaction the
    row commits at once and is published at once.
    """
    block = _outermost_block()
    if block is not None and _registered_in(block):
        return
    PolicyChange.objects.create()
    transaction.on_commit(_PublishAfterCommit(block))


def _mark(ids: list[int], **changes: object) -> None:
    for start in range(0, len(ids), CHUNK):
        PolicyChange.objects.filter(pk__in=ids[start : start + CHUNK]).update(**changes)


def publish_pending() -> int:
    """Bump the shared version for the pending changes, then mark them published.

    Returns how many were published. Raises when the bump fails, after counting the attempt
    on the rows (which stay pending). Only the ids read before the bump are marked: a change
    committed after the bump is left for its own publisher or the next run.
    """
    ids = list(
        PolicyChange.objects.filter(published_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)[:MAX_PER_RUN]
    )
    if not ids:
        return 0
    try:
        policy.invalidate_all()
    except Exception:
        _mark(ids, attempts=F("attempts") + 1)
        raise
    _mark(ids, attempts=F("attempts") + 1, published_at=timezone.now())
    return len(ids)


def prune_published(now: dt.datetime | None = None) -> int:
    """Delete changes published more than a day ago (kept that long for diagnosis)."""
    cutoff = (now or timezone.now()) - KEEP_PUBLISHED
    deleted, _ = PolicyChange.objects.filter(published_at__lt=cutoff).delete()
    return deleted


@dataclass(frozen=True, slots=True)
class OutboxRun:
    published: int
    pending: int  # still unpublished after this run (the bump failed)
    pruned: int


def run_policy_outbox() -> OutboxRun:
    """The `policy_outbox` job: publish what a failed bump left pending, prune old rows."""
    published = 0
    try:
        published = publish_pending()
    except Exception as exc:  # an outage, not a bug in the job: one line, no traceback
        logger.warning(
            "policy changes still unpublished (%s: %s); retrying on the next run",
            type(exc).__name__,
            exc,
        )
    pending = PolicyChange.objects.filter(published_at__isnull=True).count()
    return OutboxRun(published=published, pending=pending, pruned=prune_published())
