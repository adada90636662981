"""The Claude Code sessions that cost most: daily session lines from the rollups merged with the
ledger rows not rolled up yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from django.db.models import Count, Max, Min, Q, Sum

from telemetry.models import SessionRollup, UsageRecord
from telemetry.rollups.common import COUNTS, DAY, UTC, Totals, ledger_counts, read_consistently


@dataclass
class SessionTotal(Totals):
    session_id: str = ""
    key_id: int = 0
    team_id: int = 0
    agents: int = 0
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None


def top_sessions(
    organization_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    limit: int = 10,
    team_id: int | None = None,
    key_id: int | None = None,
    team_ids: Collection[int] | None = None,
) -> list[SessionTotal]:
    """The Claude Code sessions that cost most on the UTC days [start, end) touches
    (`team_ids`: of these teams only, as a team lead sees them).

    Sessions with rows not rolled up yet are read from the ledger and merged, so the ranking is
    exact without reading more than `limit` sessions from the rollups.
    """
    first_day = start.astimezone(UTC).date()
    last_day = (end.astimezone(UTC) - dt.timedelta(microseconds=1)).date()
    scope: dict[str, Any] = {"organization_id": organization_id}
    if team_id is not None:
        scope["team_id"] = team_id
    if team_ids is not None:
        scope["team_id__in"] = list(team_ids)
    if key_id is not None:
        scope["key_id"] = key_id

    def read(cursor: int) -> list[SessionTotal]:
        recent = _recent_sessions(cursor, scope, first_day, last_day)
        rolled = SessionRollup.objects.filter(day__gte=first_day, day__lte=last_day, **scope)
        best = [
            row["session_id"]
            for row in rolled.values("session_id")
            .annotate(cost=Sum("cost_micros"))
            .order_by("-cost", "session_id")[:limit]
        ]
        wanted = set(best) | set(recent)
        merged: dict[str, SessionTotal] = {}
        rows: Iterable[Mapping[str, Any]] = rolled.filter(session_id__in=wanted).values(
            "session_id",
            "key_id",
            "team_id",
            "requests",
            "agents",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_micros",
            "first_seen",
            "last_seen",
        )
        for row in rows:
            _merge_session(merged, row)
        for row in recent.values():
            _merge_session(merged, row)
        return list(merged.values())

    sessions: list[SessionTotal] = read_consistently(read)
    sessions.sort(key=lambda s: (-s.cost_micros, s.session_id))
    return sessions[:limit]


def _recent_sessions(
    cursor: int, scope: Mapping[str, Any], first_day: dt.date, last_day: dt.date
) -> dict[str, dict[str, Any]]:
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=UTC)
    end = dt.datetime.combine(last_day, dt.time(0), tzinfo=UTC) + DAY
    rows = cast(
        Iterable[Mapping[str, Any]],
        (
            UsageRecord.objects.filter(
                id__gt=cursor, created_at__gte=start, created_at__lt=end, **scope
            )
            .exclude(session_id="")
            .values("session_id")
            .annotate(
                s_key=Max("key_id"),
                s_team=Max("team_id"),
                s_agents=Count("agent_id", distinct=True, filter=~Q(agent_id="")),
                s_first=Min("created_at"),
                s_last=Max("created_at"),
                **ledger_counts(),
            )
            .order_by()
        ),
    )
    return {
        row["session_id"]: {
            "session_id": row["session_id"],
            "key_id": row["s_key"],
            "team_id": row["s_team"],
            "agents": row["s_agents"],
            "first_seen": row["s_first"],
            "last_seen": row["s_last"],
            **{name: row["n_" + name] for name in COUNTS},
        }
        for row in rows
    }


def _merge_session(merged: dict[str, SessionTotal], row: Mapping[str, Any]) -> None:
    session = merged.setdefault(
        row["session_id"],
        SessionTotal(
            session_id=row["session_id"], key_id=row["key_id"] or 0, team_id=row["team_id"] or 0
        ),
    )
    session.add([row["requests"], 0, *(row[name] or 0 for name in COUNTS[2:])])
    # Subagents are not additive across days or the partial hour; the largest count is a bound.
    session.agents = max(session.agents, int(row["agents"] or 0))
    for name, pick in (("first_seen", min), ("last_seen", max)):
        current = getattr(session, name)
        setattr(session, name, row[name] if current is None else pick(current, row[name]))
