from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from governance.services import audit


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain and report the first event that was tampered with."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit.verify_chain()
        if not report.ok:
            where = f" at event {report.first_bad_id}" if report.first_bad_id else ""
            raise CommandError(
                f"Audit chain broken{where}: {report.problem} "
                f"({report.checked} events verified before it)."
            )
        self.stdout.write(
            self.style.SUCCESS(f"Audit chain intact: {report.checked} events verified.")
        )
