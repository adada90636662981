"""Reconciliation: compare every budget's live counter with the ledger, report and fix drift.

Counters are a cache of the ledger (DESIGN invariant 1) and drift from it when a settle could
not reach Redis, when admission failed open, or when a ledger write was lost. Hourly, for each
budget and its current period, the counter `b:<budget id>:<label>` (a hash: s = settled,
r = reserved; proxy/counters/redis.py) is compared with the ledger spend of the period.

Requests keep settling while the ledger is read, and each one reaches the ledger a moment
after its settle (the gateway writes events in batches every 0.25 s). So the settled value is
read before and after the ledger (s0, s1) with a pause first: the ledger then holds at least
every request settled before s0 was read and at most those settled before s1. A ledger figure
in [s0, s1] is no drift. Outside it, the smallest correction that explains the difference is
applied with HINCRBY, which keeps every concurrent settle and leaves reservations alone; on a
quiet counter (s0 == s1) that sets the settled value to the ledger's exactly.

A missing counter is left missing: the next admission seeds it from the ledger. A Redis lock
keeps two workers from applying the same correction twice. Without REDIS_URL the counters live
inside the gateway process, out of reach; the report then holds the ledger figures only.

While usage events wait outside the ledger (spooled while the database was down, dead-lettered,
or queued in a gateway that is far behind), the ledger is short of spend that did happen: a
counter above it may be right. Then only corrections that raise a counter are applied; the
lowering ones are reported as held. Gateways advertise their backlog in Redis (telemetry/spool.py,
`<prefix>:usage-backlog:<host>:<pid>`, with a TTL); the spool dir of this host is read too.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from django.conf import settings
from django.utils import timezone

from governance.models import Budget
from telemetry import periods, spool

logger = logging.getLogger("gateway.reconcile")

SETTLE_PAUSE_SECONDS = 1.0
LOCK_SECONDS = 900

# Corrects the settled value unless the counter vanished meanwhile (it is then reseeded).
CORRECT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], 's', ARGV[1])
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class CounterCheck:
    budget_id: int
    period_label: str
    ledger_micros: int
    counter_micros: int | None = None  # settled, as first read; None: no counter (or no Redis)
    reserved_micros: int = 0
    drift_micros: int = 0  # counter minus ledger, as far as it is certain
    repaired: bool = False
    held: bool = False  # a lowering not applied: usage events wait outside the ledger


@dataclass
class ReconcileReport:
    shared_store: bool
    skipped: bool = False  # another worker holds the lock
    checks: list[CounterCheck] = field(default_factory=list)
    # Events waiting outside the ledger, by where they wait ("local" or a gateway's host:pid).
    backlog: dict[str, int] = field(default_factory=dict)

    @property
    def drifts(self) -> list[CounterCheck]:
        return [check for check in self.checks if check.drift_micros]

    @property
    def lowering_held(self) -> bool:
        """Only raising corrections are applied (see the module docstring)."""
        return bool(self.backlog)


@dataclass
class _Target:
    budget: Budget
    label: str
    start: dt.datetime | None
    end: dt.datetime | None


def counter_key(budget_id: int, label: str) -> str:
    """The Redis key admission uses (proxy/admission.py build_plan, runtime prefix)."""
    return f"{settings.GATEWAY_COUNTER_PREFIX}:b:{budget_id}:{label}"


def _targets(budget_ids: Iterable[int] | None, now: dt.datetime) -> list[_Target]:
    rows = Budget.objects.select_related("organization").order_by("id")
    if budget_ids is not None:
        rows = rows.filter(id__in=list(budget_ids))
    targets = []
    for budget in rows:
        window = periods.current_window(budget, now)
        targets.append(_Target(budget, window.label, window.start, window.end))
    return targets


def _ledger(target: _Target) -> int:
    return periods.budget_spend(target.budget, target.start, target.end)


def reconcile_budgets(
    *,
    budget_ids: Iterable[int] | None = None,
    repair: bool = True,
    now: dt.datetime | None = None,
    pause_seconds: float = SETTLE_PAUSE_SECONDS,
    client: redis.Redis | None = None,
) -> ReconcileReport:
    """Check (and with `repair`, correct) the current-period counter of every budget."""
    now = now or timezone.now()
    targets = _targets(budget_ids, now)
    if not settings.REDIS_URL and client is None:
        report = ReconcileReport(shared_store=False, backlog=_backlog(None))
        report.checks = [
            CounterCheck(t.budget.pk, t.label, ledger_micros=_ledger(t)) for t in targets
        ]
        return report
    own_client = client is None
    client = client or redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5.0)
    try:
        with _lock(client) as acquired:
            if not acquired:
                logger.info("reconciliation already running elsewhere; skipped")
                return ReconcileReport(shared_store=True, skipped=True)
            return _reconcile(client, targets, repair=repair, pause_seconds=pause_seconds)
    finally:
        if own_client:
            client.close()


def _backlog(client: redis.Redis | None) -> dict[str, int]:
    """Usage events waiting outside the ledger: in this host's spool dir, and as advertised by
    every gateway in Redis."""
    found: dict[str, int] = {}
    local = spool.backlog(Path(settings.GATEWAY_SPOOL_DIR)).total
    if local:
        found["local"] = local
    if client is not None:
        prefix = settings.GATEWAY_COUNTER_PREFIX
        for gateway, backlog in spool.advertised_backlogs(client, prefix).items():
            if backlog.total:
                found[gateway] = backlog.total
    return found


def _read(client: redis.Redis, keys: Sequence[str]) -> list[tuple[int | None, int]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, ["s", "r"])
    values: list[tuple[int | None, int]] = []
    for settled, reserved in pipe.execute():
        values.append((None if settled is None else int(settled), int(reserved or 0)))
    return values


def _reconcile(
    client: redis.Redis, targets: list[_Target], *, repair: bool, pause_seconds: float
) -> ReconcileReport:
    keys = [counter_key(t.budget.pk, t.label) for t in targets]
    # Read before and after the ledger: an event replayed from a spool in between would leave
    # no backlog at the end, yet be missing from the figures read.
    backlog = _backlog(client)
    before = _read(client, keys)
    if pause_seconds > 0:
        time.sleep(pause_seconds)  # let events settled before the first read reach the ledger
    figures = [_ledger(t) for t in targets]
    after = _read(client, keys)
    for source, events in _backlog(client).items():
        backlog[source] = max(events, backlog.get(source, 0))
    correct = client.register_script(CORRECT_LUA)
    report = ReconcileReport(shared_store=True, backlog=backlog)
    if backlog and repair:
        # By source: a gateway on this host advertises the spool dir read as "local" too.
        logger.warning(
            "usage events wait outside the ledger (%s): counters are only raised, "
            "not lowered, in this reconciliation",
            ", ".join(f"{source}: {events}" for source, events in sorted(backlog.items())),
        )
    for target, key, ledger, (s0, r0), (s1, _) in zip(
        targets, keys, figures, before, after, strict=True
    ):
        check = CounterCheck(target.budget.pk, target.label, ledger, s0, r0)
        report.checks.append(check)
        if s0 is None or s1 is None or s1 < s0:
            continue  # no counter yet, or it was recreated meanwhile: nothing to compare
        if ledger < s0:
            check.drift_micros = s0 - ledger
        elif ledger > s1:
            check.drift_micros = s1 - ledger
        if not check.drift_micros:
            continue
        logger.warning(
            "budget %s period %s: counter %s, ledger %s (drift %s micro-dollars)",
            target.budget.pk,
            target.label,
            s0,
            ledger,
            check.drift_micros,
        )
        if repair and check.drift_micros > 0 and report.lowering_held:
            check.held = True
        elif repair:
            check.repaired = correct(keys=[key], args=[-check.drift_micros]) is not None
    return report


@contextmanager
def _lock(client: redis.Redis) -> Iterator[bool]:
    key = f"{settings.GATEWAY_COUNTER_PREFIX}:lock:reconcile"
    token = secrets.token_hex(8)
    acquired = bool(client.set(key, token, nx=True, ex=LOCK_SECONDS))
    try:
        yield acquired
    finally:
        if acquired:
            client.register_script(RELEASE_LUA)(keys=[key], args=[token])
