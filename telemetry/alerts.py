"""Budget alerts: spend thresholds (50 / 80 / 100 % by default) and a burn-rate forecast, each
sent once per budget, period, kind and threshold to the organization's alert channels.

`run_alerts()` runs every minute (telemetry/tasks.py). It works in two steps:

1. Evaluate every budget against the ledger and create the AlertEvents that are due. The unique
   constraint on (budget, period, kind, threshold) decides which worker creates an alert, so two
   workers never create it twice.
2. Deliver due events. A worker first claims an event with one conditional UPDATE (it moves
   `next_attempt_at` ahead), so only one worker sends it, even when several run at once; no
   row lock is held while a webhook is slow.

Choices worth knowing:
- When spend jumps past several thresholds at once (50 and 80 between two runs), only the
  highest is sent; the lower ones are recorded as sent silently, so they never fire later in the
  period. A threshold below one already sent (added mid-period) is recorded silently too.
- Delivery is per channel: a channel that failed is retried on later runs (1, 2, 4 … 60 minutes
  apart, MAX_ATTEMPTS in all) while the channels that succeeded are not sent to again. An event
  is never re-created, and `delivered_at` is set once no enabled channel is left to send to.
  Delivery is at least once: a worker that dies after sending but before recording is
  retried after its claim expires.
- An organization without channels still gets its alerts recorded (visible in admin); they are
  marked done rather than sent later to a channel added afterwards.
- The forecast divides the last 7 days' spend by 7 (days with no spend count), projects when the
  rest of the budget runs out, and alerts if that is before the period ends. A lifetime budget has
  no period end, so it is warned about when exhaustion is less than LIFETIME_HORIZON away. The
  projection is compared in integer seconds before a date is made of it: a tiny rate against a
  large budget runs out past the year 9999, which is "no exhaustion in sight", not an error.
- A zero budget (a block, not a limit) never alerts.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from governance.models import Budget
from governance.money import format_usd
from governance.periods import PeriodWindow, window
from telemetry import channels, forecasts, ledger
from telemetry.models import AlertChannel, AlertEvent

logger = logging.getLogger(__name__)

FORECAST_WINDOW = dt.timedelta(days=7)
RATE_CACHE_SECONDS = 15 * 60
LIFETIME_HORIZON = dt.timedelta(days=30)
CLAIM = dt.timedelta(minutes=10)  # longer than the slowest delivery to every channel
MAX_ATTEMPTS = 12
MAX_RETRY_DELAY = dt.timedelta(minutes=60)
DELIVERY_BATCH = 200
PERIOD_WORDS = {
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "quarter": "quarterly",
    "lifetime": "lifetime",
}


def run_alerts(now: dt.datetime | None = None) -> int:
    """Create the alerts that are due and deliver pending ones. Returns how many alerts reached
    at least one channel in this run."""
    now = now or timezone.now()
    for budget in _budgets():
        try:
            evaluate_budget(budget, now=now)
        except Exception:  # one budget's problem must not silence every other budget
            logger.exception("evaluating alerts for budget %s failed", budget.pk)
    return deliver_due(now=now)


def _budgets() -> QuerySet[Budget]:
    live_key = Q(virtual_key__isnull=True) | Q(virtual_key__revoked_at__isnull=True)
    return (
        Budget.objects.filter(live_key, amount_micros__gt=0)
        .select_related("organization", "team", "project", "virtual_key")
        .order_by("pk")
    )


# --- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget in its current period, with what it has spent there."""

    budget: Budget
    window: PeriodWindow
    spent_micros: int
    now: dt.datetime

    @property
    def limit_micros(self) -> int:
        return self.budget.amount_micros

    @property
    def tz(self) -> str:
        return self.budget.organization.timezone


@dataclass(frozen=True, slots=True)
class Forecast:
    exhaustion_at: dt.datetime
    window_spent_micros: int

    @property
    def daily_rate_micros(self) -> int:
        return self.window_spent_micros // FORECAST_WINDOW.days


def evaluate_budget(budget: Budget, *, now: dt.datetime) -> list[AlertEvent]:
    """Create the alerts `budget` is due in its current period; returns those created here."""
    period = window(budget.period, budget.organization.timezone, now)
    recorded = set(
        AlertEvent.objects.filter(budget_id=budget.pk, period_label=period.label).values_list(
            "kind", "threshold_percent"
        )
    )
    thresholds = set(budget.alert_thresholds)
    recorded_thresholds = {t for kind, t in recorded if kind == AlertEvent.Kind.THRESHOLD}
    forecast_done = (AlertEvent.Kind.FORECAST, 0) in recorded
    if thresholds <= recorded_thresholds and forecast_done:
        return []  # nothing left to say this period: skip the ledger queries
    spent = budget_spend(budget, period.start, period.end)
    state = BudgetState(budget, period, spent, now)
    created = threshold_alerts(state, recorded_thresholds)
    if not forecast_done:
        created += forecast_alert(state)
    return created


def budget_spend(budget: Budget, start: dt.datetime | None, end: dt.datetime | None) -> int:
    owner = budget.virtual_key or budget.team or budget.project or budget.organization
    return ledger.spend_micros(
        scope=budget.scope,
        owner_id=owner.pk,
        start=start,
        end=end,
        model_patterns=tuple(budget.model_patterns),
        provider_names=tuple(budget.provider_names),
    )


def recent_spend(budget: Budget, now: dt.datetime) -> int:
    """The budget's spend in the last 7 days, cached per quarter hour: a 7-day rate barely moves
    in minutes, and the cache keeps the every-minute job to one ledger query per budget."""
    bucket = int(now.timestamp()) // RATE_CACHE_SECONDS
    # updated_at in the key: a budget whose models or providers changed is measured afresh.
    key = f"alerts:rate:{budget.pk}:{budget.updated_at.timestamp()}:{bucket}"
    cached = cache.get(key)
    if isinstance(cached, int):
        return cached
    spent = budget_spend(budget, now - FORECAST_WINDOW, now)
    cache.set(key, spent, RATE_CACHE_SECONDS + 60)
    return spent


def crossed_thresholds(thresholds: list[int], spent: int, limit: int) -> list[int]:
    """Thresholds (percent) that `spent` has reached, in exact integer arithmetic."""
    return sorted(t for t in thresholds if spent * 100 >= t * limit)


def threshold_alerts(state: BudgetState, recorded: set[int]) -> list[AlertEvent]:
    crossed = crossed_thresholds(
        state.budget.alert_thresholds, state.spent_micros, state.limit_micros
    )
    new = [t for t in crossed if t not in recorded]
    if not new:
        return []
    top = new[-1] if new[-1] > max(recorded, default=0) else None
    created = []
    for threshold in reversed(new):
        silent_reason = "" if threshold == top else _silent_reason(top, recorded)
        event = _create(state, AlertEvent.Kind.THRESHOLD, threshold, None, silent_reason)
        if event is not None:
            created.append(event)
    return created


def _silent_reason(top: int | None, recorded: set[int]) -> str:
    if top is not None:
        return f"recorded silently: the {top}% alert was sent instead"
    return f"recorded silently: the {max(recorded)}% alert was already sent"


def forecast_alert(state: BudgetState) -> list[AlertEvent]:
    result = forecast(state)
    if result is None:
        return []
    event = _create(state, AlertEvent.Kind.FORECAST, 0, result, "")
    return [event] if event is not None else []


def forecast(state: BudgetState) -> Forecast | None:
    """When the budget runs out at the last 7 days' rate, if that is within the period."""
    remaining = state.limit_micros - state.spent_micros
    if remaining <= 0:
        return None  # already exhausted: the 100 % threshold alert says so
    recent = recent_spend(state.budget, state.now)
    exhaustion = forecasts.exhaustion_at(
        now=state.now,
        remaining_micros=remaining,
        window_spent_micros=recent,
        window=FORECAST_WINDOW,
        horizon=state.window.end or state.now + LIFETIME_HORIZON,
    )
    if exhaustion is None:
        return None
    return Forecast(exhaustion_at=exhaustion, window_spent_micros=recent)


def _create(
    state: BudgetState,
    kind: str,
    threshold: int,
    result: Forecast | None,
    silent_reason: str,
) -> AlertEvent | None:
    """Create one alert unless another worker already has (the unique constraint decides)."""
    budget = state.budget
    message = forecast_message(state, result) if result else threshold_message(state, threshold)
    defaults: dict[str, Any] = {
        "organization_id": budget.organization_id,
        "spent_micros": state.spent_micros,
        "limit_micros": state.limit_micros,
        "forecast_exhaustion": result.exhaustion_at if result else None,
        "message": message,
        "payload": build_payload(state, kind, threshold, result, message),
    }
    if silent_reason:
        defaults["delivered_at"] = state.now
        defaults["delivery_log"] = [
            {"at": state.now.isoformat(), "silent": True, "ok": True, "detail": silent_reason}
        ]
    event, created = AlertEvent.objects.get_or_create(
        budget_id=budget.pk,
        period_label=state.window.label,
        kind=kind,
        threshold_percent=threshold,
        defaults=defaults,
    )
    return event if created else None


# --- wording and payload -------------------------------------------------------------------


def owner_label(budget: Budget) -> str:
    owner = budget.virtual_key or budget.team or budget.project or budget.organization
    return f'{budget.scope} "{owner.name}"'


def budget_label(budget: Budget) -> str:
    """`monthly budget`, `monthly budget for claude-opus-*`, `daily budget on bedrock`."""
    label = f"{PERIOD_WORDS.get(budget.period, budget.period)} budget"
    if budget.model_patterns:
        label += " for " + ", ".join(budget.model_patterns)
    if budget.provider_names:
        label += " on " + ", ".join(budget.provider_names)
    return label


def local_day(moment: dt.datetime, tz: str, *, today: dt.datetime) -> str:
    """`Nov 19` in the organization's time zone (with the year when it is not this year's)."""
    zone = zoneinfo.ZoneInfo(tz)
    day = moment.astimezone(zone).date()
    text = f"{day:%b} {day.day}"
    return text if day.year == today.astimezone(zone).year else f"{text}, {day.year}"


def threshold_message(state: BudgetState, threshold: int) -> str:
    budget = state.budget
    spent, limit = state.spent_micros, state.limit_micros
    percent = spent * 100 // limit
    text = (
        f"{owner_label(budget)} has spent {format_usd(spent)} of its {budget_label(budget)} of "
        f"{format_usd(limit)} ({percent}%)"
    )
    text += (
        f": the budget is exhausted and {_exhaust_effect(budget)}."
        if threshold >= 100
        else (f", passing the {threshold}% alert threshold.")
    )
    if state.window.end is not None:
        reset = local_day(state.window.end, state.tz, today=state.now)
        text += f" It resets on {reset} ({state.tz})."
    return text[0].upper() + text[1:]


def _exhaust_effect(budget: Budget) -> str:
    if budget.on_exhaust == Budget.OnExhaust.DOWNGRADE:
        return f"requests now go to {budget.downgrade_model}"
    if budget.on_exhaust == Budget.OnExhaust.ALERT:
        return "requests continue (this budget only alerts)"
    return "requests are now refused"


def forecast_message(state: BudgetState, result: Forecast) -> str:
    budget = state.budget
    rate = format_usd(_to_cents(result.daily_rate_micros))
    day = local_day(result.exhaustion_at, state.tz, today=state.now)
    return (
        f"At the last 7 days' rate ({rate}/day), {owner_label(budget)} exhausts its "
        f"{budget_label(budget)} of {format_usd(state.limit_micros)} on {day} ({state.tz})."
    )


def _to_cents(micros: int) -> int:
    """Rounded to the cent, half up, for display only: payloads carry exact micros."""
    return (micros + 5_000) // 10_000 * 10_000


def usd(micros: int) -> str:
    """Exact dollars as a string with six decimals, e.g. `812.400000`."""
    return f"{Decimal(micros).scaleb(-6):f}"


def build_payload(
    state: BudgetState, kind: str, threshold: int, result: Forecast | None, message: str
) -> dict[str, Any]:
    """The generic webhook body (Slack and email are rendered from it). No secrets in here:
    names and ids only, never key material or channel URLs."""
    budget, org = state.budget, state.budget.organization
    owner = budget.virtual_key or budget.team or budget.project or org
    spent, limit = state.spent_micros, state.limit_micros
    title = (
        f"{owner_label(budget)} forecast to exhaust its {budget_label(budget)}"
        if kind == AlertEvent.Kind.FORECAST
        else f"{owner_label(budget)} at {threshold}% of its {budget_label(budget)}"
    )
    return {
        "type": f"budget.{kind}",
        "title": title[0].upper() + title[1:],
        "message": message,
        "organization": {"id": org.pk, "name": org.name, "timezone": org.timezone},
        "budget": {
            "id": budget.pk,
            "period": budget.period,
            "model_patterns": list(budget.model_patterns),
            "provider_names": list(budget.provider_names),
            "on_exhaust": budget.on_exhaust,
        },
        "scope": budget.scope,
        "owner": {"id": owner.pk, "name": owner.name},
        "period": {
            "label": state.window.label,
            "start": state.window.start.isoformat() if state.window.start else None,
            "end": state.window.end.isoformat() if state.window.end else None,
        },
        "threshold_percent": threshold if kind == AlertEvent.Kind.THRESHOLD else None,
        "spent_micros": spent,
        "spent_usd": usd(spent),
        "limit_micros": limit,
        "limit_usd": usd(limit),
        "percent_used": f"{Decimal(spent * 100) / Decimal(limit):.2f}",
        "spent_display": format_usd(spent),
        "limit_display": format_usd(limit),
        "forecast": _forecast_payload(state, result) if result else None,
        "evaluated_at": state.now.isoformat(),
    }


def _forecast_payload(state: BudgetState, result: Forecast) -> dict[str, Any]:
    local = result.exhaustion_at.astimezone(zoneinfo.ZoneInfo(state.tz))
    return {
        "exhaustion_at": result.exhaustion_at.isoformat(),
        "exhaustion_date": local.date().isoformat(),
        "timezone": state.tz,
        "window_days": FORECAST_WINDOW.days,
        "window_spent_micros": result.window_spent_micros,
        "window_spent_usd": usd(result.window_spent_micros),
        "daily_rate_micros": result.daily_rate_micros,
        "daily_rate_usd": usd(result.daily_rate_micros),
    }


# --- delivery ------------------------------------------------------------------------------


def deliver_due(*, now: dt.datetime) -> int:
    """Deliver every alert that is due (new, or a retry whose time has come)."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    pending = (
        AlertEvent.objects.filter(due, delivered_at__isnull=True, attempts__lt=MAX_ATTEMPTS)
        .order_by("pk")
        .values_list("pk", flat=True)[:DELIVERY_BATCH]
    )
    sent = 0
    for pk in list(pending):
        if not claim(pk, now=now):
            continue  # another worker has it
        try:
            sent += deliver_event(pk, now=now)
        except Exception:  # the claim expires and a later run retries this alert
            logger.exception("delivering alert %s failed", pk)
    return sent


def claim(pk: int, *, now: dt.datetime) -> bool:
    """Take an alert for delivery. One conditional UPDATE: when two workers race, the database
    lets only one of them match the row (PostgreSQL re-checks the WHERE after the row lock)."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    claimed = AlertEvent.objects.filter(due, pk=pk, delivered_at__isnull=True).update(
        next_attempt_at=now + CLAIM, attempts=F("attempts") + 1
    )
    return claimed == 1


def deliver_event(pk: int, *, now: dt.datetime) -> int:
    """Send a claimed alert to each enabled channel not yet reached; 1 if any channel took it."""
    event = AlertEvent.objects.get(pk=pk)
    done = {entry.get("channel_id") for entry in event.delivery_log if entry.get("ok")}
    targets = [
        channel
        for channel in AlertChannel.objects.filter(
            organization_id=event.organization_id, enabled=True
        ).order_by("pk")
        if channel.pk not in done
    ]
    payload = {**event.payload, "alert_id": event.pk}
    log = list(event.delivery_log)
    if not targets and not done:
        log.append({"at": now.isoformat(), "ok": False, "detail": "no enabled alert channel"})
    results = [(channel, channels.deliver(channel, payload)) for channel in targets]
    log += [_log_entry(channel, result, now) for channel, result in results]
    failed = [channel for channel, result in results if not result.ok]
    event.delivery_log = log
    if failed:
        delay = min(dt.timedelta(minutes=2 ** (event.attempts - 1)), MAX_RETRY_DELAY)
        event.next_attempt_at = now + delay
        logger.warning("alert %s: %d channel(s) failed, retry at %s", pk, len(failed), delay)
    else:
        event.delivered_at, event.next_attempt_at = now, None
    event.save(update_fields=["delivery_log", "delivered_at", "next_attempt_at"])
    return int(any(result.ok for _, result in results))


def _log_entry(
    channel: AlertChannel, result: channels.DeliveryResult, now: dt.datetime
) -> dict[str, Any]:
    return {
        "at": now.isoformat(),
        "channel_id": channel.pk,
        "channel": channel.name,
        "kind": channel.kind,
        "target": channels.describe_target(channel),
        "ok": result.ok,
        "attempts": result.attempts,
        "detail": result.detail,
    }
