from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance import config


class Command(BaseCommand):
    help = (
        "Apply a governance config file (YAML; see examples/governance.yaml). Idempotent: a "
        "second run of the same file changes nothing. All or nothing: an invalid file changes "
        "nothing and the error names the line and field. Objects listed in the file are created "
        "or updated; budgets, deployments, rate limits, model policies and MCP grants of listed "
        "objects are made exactly what the file says. Top-level objects missing from the file "
        "(organizations, teams, projects, keys, providers, models, MCP servers) are left alone. "
        "${NAME} is read from the environment (${NAME:-default} when optional). "
        "A generated key secret is printed once, on the run that creates the key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the YAML config file")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would change and change nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No config file at {path}")
        try:
            result = config.apply_file(path, dry_run=options["dry_run"])
        except config.ConfigError as exc:
            raise CommandError(f"{exc}\nNothing was changed.") from exc
        for line in result.changes:
            self.stdout.write(line)
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(f"! {warning}"))
        if result.new_secrets:
            self._print_secrets(result.new_secrets)
        self.stdout.write(self.style.SUCCESS(result.summary))

    def _print_secrets(self, secrets: list[tuple[str, str]]) -> None:
        self.stdout.write(
            self.style.WARNING(
                "\n=== New key secrets: shown this once, store them now (only a hash is kept) ==="
            )
        )
        for label, secret in secrets:
            self.stdout.write(f"  {label}: {secret}")
        self.stdout.write(self.style.WARNING("=== end of new key secrets ===\n"))
