"""`manage.py create_api_token USERNAME [--name NAME] [--expires-days N]`: print a new API token.

The token is printed alone on the last line, so scripts can take it with `tail -n 1`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from governance.actors import Actor
from governance.services import tokens


class Command(BaseCommand):
    help = "Create an API token for a user (it acts with the user's roles); prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label for the token")
        parser.add_argument(
            "--expires-days", type=int, default=None, help="days until it expires (default never)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f'No user "{options["username"]}".') from None
        days = options["expires_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-days must be at least 1.")
        expires = timezone.now() + dt.timedelta(days=days) if days else None
        issued = tokens.create_token(
            actor=Actor.system("manage.py create_api_token"),
            user=user,
            name=options["name"],
            expires_at=expires,
        )
        when = f"expires {expires:%Y-%m-%d %H:%M} UTC" if expires else "does not expire"
        self.stdout.write(
            f'API token "{issued.token.name}" for {user.get_username()} ({when}). '
            "It is shown once; store it now:"
        )
        self.stdout.write(issued.secret)
