"""The usage backlog on this host's disk, for the admin index's warning and link."""

from __future__ import annotations

from pathlib import Path

from django import template
from django.conf import settings

from telemetry import spool

register = template.Library()


@register.simple_tag
def usage_backlog() -> spool.Backlog:
    try:
        return spool.backlog(Path(settings.GATEWAY_SPOOL_DIR))
    except OSError:  # an unreadable spool dir must not take the admin index down
        return spool.Backlog()
