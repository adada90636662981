"""The request log's filters and its keyset pages.

Pages are keyed on (created_at, id), newest first: a page is "the next N rows before (after)
this row", so a deep page costs what the first one does, and nothing ever counts the table.
The range condition is repeated as a plain `created_at <= t` so the database can use it as an
index bound on (created_at) or (organization/team/project/key/session, created_at).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms
from django.db.models import Max, Q, QuerySet
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from governance.models import (
    MCPServer,
    ModelRoute,
    Organization,
    Project,
    Provider,
    Team,
    VirtualKey,
)
from telemetry.models import UsageRecord

PAGE_SIZE = 50
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RANGES = {
    "15m": dt.timedelta(minutes=15),
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "all": None,
}
RANGE_LABELS = {
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "all": "All time",
}
# A day by default: wide enough to find a request, narrow enough that a filter matching
# almost nothing still stops scanning quickly on a ledger of millions of rows.
DEFAULT_RANGE = "24h"
STATUS_CHOICES = [
    ("ok", "Succeeded (< 400)"),
    ("error", "Failed (>= 400)"),
    ("402", "402 budget exhausted"),
    ("403", "403 not allowed"),
    ("429", "429 rate limited"),
    ("499", "499 client went away"),
    ("502", "502 upstream failed"),
]
FILTER_FIELDS = (
    "organization",
    "team",
    "project",
    "key",
    "model",
    "provider",
    "status",
    "session",
    "range",
    "start",
    "end",
)
_STATUS = re.compile(r"^(ok|error|[1-5]\d\d)$")
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]


Visible = Callable[[QuerySet[Any]], QuerySet[Any]]


def _everything(rows: QuerySet[Any]) -> QuerySet[Any]:
    return rows


class LogFilterForm(forms.Form):
    """GET parameters of /logs. Ids stay plain integers: a ledger row outlives a deleted key."""

    organization = forms.IntegerField(required=False, min_value=1)
    team = forms.IntegerField(required=False, min_value=0)
    project = forms.IntegerField(required=False, min_value=0)
    key = forms.IntegerField(required=False, min_value=1)
    model = forms.CharField(required=False, max_length=200)
    provider = forms.CharField(required=False, max_length=100)
    status = forms.CharField(required=False, max_length=10)
    session = forms.CharField(required=False, max_length=100)
    range = forms.ChoiceField(required=False, choices=list(RANGE_LABELS.items()))
    start = forms.DateTimeField(
        required=False,
        input_formats=DATETIME_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    end = forms.DateTimeField(
        required=False,
        input_formats=DATETIME_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def clean_status(self) -> str:
        value: str = self.cleaned_data.get("status") or ""
        if value and not _STATUS.match(value):
            raise forms.ValidationError("ok, error or an HTTP status code")
        return value

    def clean_range(self) -> str:
        return self.cleaned_data.get("range") or DEFAULT_RANGE

    def select_options(self, *, visible: Visible = _everything) -> dict[str, SafeString]:
        """<option> lists for the selects, narrowed to the chosen organization and to the
        organizations, teams, projects and keys `visible` leaves (the user's roles).

        Built here rather than by the Select widget, whose per-option template rendering
        costs milliseconds per hundred keys.
        """
        org = self.cleaned_data.get("organization")
        providers = [(name, name) for name in Provider.objects.values_list("name", flat=True)]
        # An MCP server's tool calls have the provider "mcp:<server>".
        servers = MCPServer.objects.order_by("name").values_list("name", flat=True)
        providers += [(f"mcp:{name}", f"MCP server {name}") for name in servers]
        menus: dict[str, tuple[str, list[tuple[Any, str]]]] = {
            "organization": ("Any organization", _orgs(visible)),
            "team": ("Any team", [(0, "No team"), *_teams(org, visible)]),
            "project": ("Any project", [(0, "No project"), *_projects(org, visible)]),
            "key": ("Any key", _keys(org, visible)),
            "provider": ("Any provider", providers),
            "status": ("Any status", STATUS_CHOICES),
            "range": ("", list(RANGE_LABELS.items())),
        }
        return {name: self._options(name, *menu) for name, menu in menus.items()}

    def _options(self, name: str, any_label: str, choices: list[tuple[Any, str]]) -> SafeString:
        value = self.cleaned_data.get(name)
        current = "" if value is None else str(value)
        if any_label:
            choices = [("", any_label), *choices]
        if current and current not in {str(v) for v, _ in choices}:
            # A deleted key's rows are still in the log, and a status can be typed in the URL.
            choices = [*choices, (current, f"#{current} (deleted or elsewhere)")]
        return format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            ((v, " selected" if str(v) == current else "", label) for v, label in choices),
        )


def model_names() -> list[str]:
    """Suggestions for the model filter: the public model names routes are configured for."""
    return sorted(ModelRoute.objects.values_list("public_name", flat=True))


def _orgs(visible: Visible) -> list[tuple[Any, str]]:
    return list(visible(Organization.objects.order_by("name")).values_list("pk", "name"))


def _teams(org: int | None, visible: Visible) -> list[tuple[Any, str]]:
    rows = visible(Team.objects.order_by("organization__name", "name"))
    if org:
        rows = rows.filter(organization_id=org)
    return [(pk, f"{o}/{n}") for pk, o, n in rows.values_list("pk", "organization__name", "name")]


def _projects(org: int | None, visible: Visible) -> list[tuple[Any, str]]:
    rows = visible(Project.objects.order_by("organization__name", "name"))
    if org:
        rows = rows.filter(organization_id=org)
    return [(pk, f"{o}/{n}") for pk, o, n in rows.values_list("pk", "organization__name", "name")]


def _keys(org: int | None, visible: Visible) -> list[tuple[Any, str]]:
    rows = visible(VirtualKey.objects.order_by("organization__name", "name"))
    if org:
        rows = rows.filter(organization_id=org)
    return [
        (pk, f"{o}/{parent}/{name}" if parent else f"{o}/{name}")
        for pk, o, parent, name in rows.values_list(
            "pk", "organization__name", "parent__name", "name"
        )
    ]


@dataclass(frozen=True, slots=True)
class LogFilters:
    values: Mapping[str, Any]
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def live(self) -> bool:
        """Whether new rows can still appear: no fixed end in the past."""
        return self.end is None or self.end > timezone.now()

    def apply(self, rows: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        v = self.values
        for name, column in (
            ("organization", "organization_id"),
            ("team", "team_id"),
            ("project", "project_id"),
            ("key", "key_id"),
        ):
            if v.get(name) is not None:
                # 0 means "none": requests of a key without a team, say.
                rows = rows.filter(
                    **{f"{column}__isnull": True} if v[name] == 0 else {column: v[name]}
                )
        if v.get("model"):
            model = v["model"]
            rows = rows.filter(
                Q(served_model=model) | Q(routed_model=model) | Q(requested_model=model)
            )
        if v.get("provider"):
            rows = rows.filter(provider=v["provider"])
        rows = _status(rows, v.get("status") or "")
        if v.get("session"):
            rows = rows.filter(session_id=v["session"])
        if self.start is not None:
            rows = rows.filter(created_at__gte=self.start)
        if self.end is not None:
            rows = rows.filter(created_at__lt=self.end)
        return rows

    def query_items(self) -> list[tuple[str, str]]:
        """The filters as GET parameters (for links that keep them), cursor left out."""
        items = []
        for name in FILTER_FIELDS:
            value = self.values.get(name)
            if value is None or value == "":
                continue
            if isinstance(value, dt.datetime):
                value = timezone.localtime(value).strftime("%Y-%m-%dT%H:%M")
            items.append((name, str(value)))
        return items


def _status(rows: QuerySet[UsageRecord], status: str) -> QuerySet[UsageRecord]:
    if status == "ok":
        return rows.filter(status__lt=400)
    if status == "error":
        return rows.filter(status__gte=400)
    if status:
        return rows.filter(status=int(status))
    return rows


def parse_filters(form: LogFilterForm, now: dt.datetime) -> LogFilters:
    """Valid fields of a (bound) form; a bad field is reported by the form and ignored here."""
    form.is_valid()
    values: dict[str, Any] = {
        name: form.cleaned_data[name] for name in FILTER_FIELDS if name in form.cleaned_data
    }
    preset: str = values.get("range") or DEFAULT_RANGE
    values["range"] = preset
    start, end = values.get("start"), values.get("end")
    if start is None and end is None:
        span = RANGES[preset]
        start = now - span if span is not None else None
    else:
        values["range"] = ""  # explicit times win over the preset
    return LogFilters(values=values, start=start, end=end)


# --- keyset pages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: dt.datetime
    id: int

    def token(self) -> str:
        micros = (self.created_at - EPOCH) // dt.timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def parse(cls, token: str | None) -> Cursor | None:
        if not token:
            return None
        try:
            micros_text, id_text = token.split(".", 1)
            micros, pk = int(micros_text), int(id_text)
            moment = EPOCH + dt.timedelta(microseconds=micros)
        except (ValueError, OverflowError):
            return None
        return cls(moment, pk)

    @classmethod
    def of(cls, row: UsageRecord) -> Cursor:
        return cls(row.created_at, row.pk)


@dataclass(frozen=True, slots=True)
class LogPage:
    rows: list[UsageRecord]
    older: Cursor | None  # the last row, when older rows exist
    newer: Cursor | None  # the first row, when this is not the newest page


def page(
    rows: QuerySet[UsageRecord],
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> LogPage:
    """One page newest first: the rows just before `before`, or just after `after`."""
    if after is not None:
        newer_rows = rows.filter(
            Q(created_at__gt=after.created_at) | Q(created_at=after.created_at, id__gt=after.id),
            created_at__gte=after.created_at,
        ).order_by("created_at", "id")[: size + 1]
        found = list(newer_rows)
        more_newer = len(found) > size
        found = list(reversed(found[:size]))
        return LogPage(
            rows=found,
            older=Cursor.of(found[-1]) if found else after,
            newer=Cursor.of(found[0]) if found and more_newer else None,
        )
    if before is not None:
        rows = rows.filter(
            Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.id),
            created_at__lte=before.created_at,
        )
    found = list(rows.order_by("-created_at", "-id")[: size + 1])
    more_older = len(found) > size
    found = found[:size]
    return LogPage(
        rows=found,
        older=Cursor.of(found[-1]) if found and more_older else None,
        newer=Cursor.of(found[0]) if found and before is not None else None,
    )


# --- the live feed --------------------------------------------------------------------------

# Ledger ids are handed out at insert but become visible at commit, and several gateway
# processes write batches at once, so an id can become visible after a higher one was shown.
# Each poll therefore also hands back the ids at or below its cursor that were not visible yet
# (gaps) and the next poll looks them up again by primary key. Only ids near the newest can
# still be in flight (the writers' open batches), so ids further down than GAP_WINDOW are given
# up: that also retires the ids no row will ever have (a rolled-back batch, a request id
# already in the ledger: both use up sequence values).
GAP_WINDOW = 5_000
MAX_GAPS = 200


@dataclass(frozen=True, slots=True)
class LiveCursor:
    """Where a live feed stands: every id up to `since` was either looked at or is in `gaps`."""

    since: int
    gaps: tuple[int, ...] = ()

    def gaps_token(self) -> str:
        return ",".join(map(str, self.gaps))

    @classmethod
    def parse(cls, since: str | None, gaps: str | None) -> LiveCursor:
        """The cursor a client sent back; anything malformed is dropped, never an error."""
        try:
            top = max(int(since or "0"), 0)
        except ValueError:
            return cls(0)
        found: set[int] = set()
        for part in (gaps or "").split(",", MAX_GAPS)[:MAX_GAPS]:
            try:
                pk = int(part)
            except ValueError:
                continue
            if 0 < pk <= top:
                found.add(pk)
        return cls(top, tuple(sorted(found)))


@dataclass(frozen=True, slots=True)
class LiveRows:
    rows: list[UsageRecord]  # newest first
    cursor: LiveCursor  # for the next poll
    truncated: bool  # more new rows matched than were returned


def latest_id() -> int:
    return int(UsageRecord.objects.aggregate(top=Max("id"))["top"] or 0)


def live_start() -> LiveCursor:
    """The cursor of a page read now. Taken before the page's rows: a row committed in between
    is on the page and also looked up by the first poll, which the client skips as shown."""
    top = latest_id()
    return LiveCursor(top, _missing_ids(low=max(top - GAP_WINDOW, 0), top=top))


def _missing_ids(*, low: int, top: int) -> tuple[int, ...]:
    """Ids in (low, top] with no visible row: one index range scan of at most GAP_WINDOW ids."""
    if top <= low:
        return ()
    ids = UsageRecord.objects.filter(id__gt=low, id__lte=top).order_by().values_list("id")
    present = {pk for (pk,) in ids}
    return tuple(pk for pk in range(low + 1, top + 1) if pk not in present)


def live_rows(rows: QuerySet[UsageRecord], cursor: LiveCursor, *, limit: int) -> LiveRows:
    """Rows of `rows` (a filtered ledger) that became visible since `cursor`, newest first.

    Every query runs on the primary key: the new ids, scanned backwards from the newest and
    bounded by `since`, plus the handful of gap ids. Each visibility check runs before the read
    of matching rows, so a row committing in between is either returned now (and taken out of
    the gaps) or still counted as a gap, never neither. A row whose gap is filled but which does
    not match the filters is dropped from the gaps all the same.
    """
    top = latest_id()
    filled: set[int] = set()
    if cursor.gaps:
        ids = UsageRecord.objects.filter(id__in=cursor.gaps).order_by().values_list("id")
        filled = {pk for (pk,) in ids}
    low = max(cursor.since, top - GAP_WINDOW)
    missing = {pk for pk in cursor.gaps if pk not in filled and pk > top - GAP_WINDOW}
    missing.update(_missing_ids(low=low, top=top))
    found: list[UsageRecord] = []
    if top > cursor.since:
        # The newest `limit` by id; `id <= top` so that nothing above the next cursor is
        # returned now and again by the next poll.
        found = list(rows.filter(id__gt=cursor.since, id__lte=top).order_by("-id")[:limit])
    truncated = len(found) >= limit
    if filled:
        found.extend(rows.filter(id__in=filled).order_by())
    missing.difference_update(row.pk for row in found)
    # Shown newest first, like the page.
    found.sort(key=lambda row: (row.created_at, row.pk), reverse=True)
    next_cursor = LiveCursor(max(top, cursor.since), tuple(sorted(missing)[-MAX_GAPS:]))
    return LiveRows(rows=found, cursor=next_cursor, truncated=truncated)
