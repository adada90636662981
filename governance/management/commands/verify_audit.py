from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.services import audit, audit_anchors


class Command(BaseCommand):
    help = (
        "Recompute the audit log's hash chain, check it against the anchors exported outside "
        "the database, and report the first event that was tampered with."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor-file",
            type=Path,
            help="Anchors to check against (default GATEWAY_AUDIT_ANCHOR_FILE), e.g. a copy "
            "kept elsewhere or rebuilt from shipped logs.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path | None = options.get("anchor_file")
        anchors = audit_anchors.anchored_hashes(path) if path is not None else None
        report = audit.verify_chain(anchors=anchors)
        if not report.ok:
            where = f" at event {report.first_bad_id}" if report.first_bad_id else ""
            raise CommandError(
                f"Audit chain broken{where}: {report.problem} "
                f"({report.checked} events verified before it)."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain intact: {report.checked} events verified, "
                f"{report.anchors_checked} anchors matched."
            )
        )
