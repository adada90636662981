"""/me: a developer pastes their virtual key into a form and sees what GET /api/v1/me answers.

The key travels in the body of a POST (CSRF-protected), never in a URL, where it would land in
browser history, proxy logs and Referer headers; the answer is marked no-store and never shows
the key back. No sign-in: the key is the credential, as it is for the API.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from governance.money import format_usd
from telemetry import selfservice


def _money(micros: int | None) -> str:
    return format_usd(micros) if micros is not None else "—"


def _when(iso: str | None, *, with_time: bool) -> str:
    """ "Jan 1" or "Dec 9, 21:52" from an ISO date-time already in the organization's zone."""
    if iso is None:
        return ""
    moment = dt.datetime.fromisoformat(iso)
    day = f"{moment:%b} {moment.day}"
    return f"{day}, {moment:%H:%M}" if with_time else day


def _display(overview: dict[str, Any]) -> dict[str, Any]:
    """The overview with dollar amounts for people ($12.34) beside the exact figures."""
    for line in overview["budgets"]:
        line["limit"] = _money(line["limit_micros"])
        line["spent"] = _money(line["spent_micros"])
        line["remaining"] = _money(line["remaining_micros"])
        line["bar_percent"] = min(line["percent_used"], 100)
        line["state"] = (
            "over"
            if line["percent_used"] >= 100
            else "warn"
            if line["percent_used"] >= 80
            else "ok"
        )
        line["daily_rate"] = _money(line["forecast"]["daily_rate_micros"])
        line["resets"] = _when(line["resets_at"], with_time=False)
        line["runs_out"] = _when(line["forecast"]["exhausted_at"], with_time=True)
    usage = overview["usage"]
    for group in ("by_day", "by_model", "sessions"):
        for row in usage[group]:
            row["cost"] = _money(row["cost_micros"])
    return overview


def _client_address(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


@require_http_methods(["GET", "POST"])
def me_page(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"me": None, "error": ""}
    status = 200
    if request.method == "POST":
        secret = request.POST.get("key", "").strip()
        address = _client_address(request)
        if selfservice.throttled(address):
            context["error"] = "Too many failed attempts from here; wait a minute."
            status = 429
        else:
            policy = selfservice.key_policy(secret, address=address)
            if policy is None:
                context["error"] = "That key is unknown, revoked or expired."
                status = 401
            else:
                context["me"] = _display(selfservice.overview(policy))
    response = render(request, "telemetry/me.html", context, status=status)
    response["Cache-Control"] = "no-store"
    # Not "no-referrer": browsers then send `Origin: null` with the form, which CSRF refuses.
    response["Referrer-Policy"] = "same-origin"
    return response
