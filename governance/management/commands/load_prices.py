from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.actors import Actor
from governance.services import prices


class Command(BaseCommand):
    help = (
        "Load a price sheet (YAML, USD per million tokens) into the versioned price book. "
        "Without a file, the shipped Claude prices are (re)loaded."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", default=str(prices.DEFAULT_PRICE_FILE))

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No price file at {path}")
        try:
            result = prices.load_price_file(path=path, actor=Actor.system("command:load_prices"))
        except ValidationError as exc:
            raise CommandError(f"{path}: {'; '.join(exc.messages)}") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{path}: {result.created} created, {result.updated} updated, "
                f"{result.unchanged} unchanged."
            )
        )
