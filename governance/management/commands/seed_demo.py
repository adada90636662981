"""Seed an empty database with a demo organization, key and admin, so `make run` shows the flow.

Everything governance-side is written through the services (audited like any other change).
The demo key and the admin password are generated here; with --credentials-file they are
kept in a local file (mode 600) so that `make run` can show them on every start. That file is
a convenience of the local embedded default only, never something to use in production.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from governance.actors import Actor
from governance.models import (
    Budget,
    Deployment,
    ModelRoute,
    Organization,
    Provider,
    RateLimit,
    Team,
    VirtualKey,
)
from governance.money import usd_to_micros
from governance.services import common, keys

ACTOR = Actor.system("command:seed_demo")
DEMO_MODELS = (
    "claude-sonnet-4-6",
    "claude-opus-4-7",
    "claude-haiku-4-5",
    "claude-opus-5-5",
    "claude-sonnet-5",
    "claude-haiku-5-5",
    # Any other Claude model (e.g. the default of whichever Claude Code version runs) is served
    # under its own name: exact routes win, this pattern catches the rest.
    "claude-*",
)
ORG_NAME = "demo"
TEAM_NAME = "platform"
KEY_NAME = "demo-key"
ADMIN_USERNAME = "admin"
ORG_MONTHLY_USD = 1000
TEAM_MONTHLY_USD = 200
KEY_REQUESTS_PER_MINUTE = 120


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    api_key: str
    admin_username: str
    admin_password: str  # empty when an "admin" user already existed and was left alone

    def __repr__(self) -> str:  # keep secrets out of tracebacks
        return f"DemoCredentials(admin_username={self.admin_username!r})"

    def render(self) -> str:
        return (
            "# Written by `manage.py seed_demo` for the local embedded default only.\n"
            "# Never use these in production; delete this file to forget them.\n"
            f"DEMO_ADMIN_USERNAME={self.admin_username}\n"
            f"DEMO_ADMIN_PASSWORD={self.admin_password}\n"
            f"DEMO_API_KEY={self.api_key}\n"
        )


def read_credentials(path: Path) -> dict[str, str]:
    """Parse a credentials file written by this command (KEY=VALUE lines)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def write_credentials(path: Path, credentials: DemoCredentials) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above applies only when the file is new
    with os.fdopen(fd, "w") as handle:
        handle.write(credentials.render())


def _mock_provider() -> Provider:
    existing = Provider.objects.filter(name="mock").first()
    if existing is not None:
        return existing
    provider = Provider(name="mock", kind=Provider.Kind.MOCK)
    common.save_instance(provider, actor=ACTOR)
    return provider


def _routes(provider: Provider) -> None:
    """Serve each demo model from the mock provider; models already routed are left alone."""
    routed = ModelRoute.objects.filter(public_name__in=DEMO_MODELS)
    taken = set(routed.values_list("public_name", flat=True))
    for name in DEMO_MODELS:
        if name in taken:
            continue
        route = ModelRoute(public_name=name, description="demo: served by the mock provider")
        common.save_instance(route, actor=ACTOR)
        upstream = "" if "*" in name else name  # empty: serve the requested name
        deployment = Deployment(route=route, provider=provider, upstream_model=upstream)
        common.save_instance(deployment, actor=ACTOR)


def _organization() -> tuple[Organization, Team]:
    # The demo routes every claude-* name so that whatever model a Claude Code version asks for
    # is answered: a model newer than the shipped price book is priced by its family's dearest
    # price (marked estimated) instead of being refused, the production default.
    org = Organization(
        name=ORG_NAME,
        display_name="Demo",
        timezone="UTC",
        unpriced_models=Organization.UnpricedModels.FALLBACK,
    )
    common.save_instance(org, actor=ACTOR)
    team = Team(organization=org, name=TEAM_NAME, description="demo team")
    common.save_instance(team, actor=ACTOR)
    for budget in (
        Budget(organization=org, amount_micros=usd_to_micros(ORG_MONTHLY_USD)),
        Budget(organization=org, team=team, amount_micros=usd_to_micros(TEAM_MONTHLY_USD)),
    ):
        common.save_instance(budget, actor=ACTOR)
    return org, team


def _key(org: Organization, team: Team) -> str:
    issued = keys.create_key(
        actor=ACTOR, organization=org, team=team, name=KEY_NAME, owner="demo@localhost"
    )
    limit = RateLimit(virtual_key=issued.key, requests_per_minute=KEY_REQUESTS_PER_MINUTE)
    common.save_instance(limit, actor=ACTOR)
    return issued.secret


def _admin_password() -> str:
    """Create the demo superuser; returns its password, or "" if the user already existed."""
    users = get_user_model().objects
    if users.filter(username=ADMIN_USERNAME).exists():
        return ""
    password = secrets.token_urlsafe(12)
    users.create_superuser(username=ADMIN_USERNAME, email="", password=password)
    return password


@transaction.atomic
def seed() -> DemoCredentials:
    """Create the demo data in one transaction, so a failure leaves the database empty."""
    _routes(_mock_provider())
    org, team = _organization()
    api_key = _key(org, team)
    return DemoCredentials(
        api_key=api_key, admin_username=ADMIN_USERNAME, admin_password=_admin_password()
    )


def _stale(path: Path) -> bool:
    """Whether a credentials file names a key this database does not have (another database)."""
    api_key = read_credentials(path).get("DEMO_API_KEY", "")
    return not VirtualKey.objects.filter(lookup_hash=keys.hash_secret(api_key)).exists()


class Command(BaseCommand):
    help = (
        "Seed an empty database with a demo: a mock provider serving a few Claude models, "
        'organization "demo" (UTC, $1000/month), team "platform" ($200/month), key "demo-key" '
        '(120 requests/minute) and a superuser "admin". Does nothing if any organization exists.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--credentials-file",
            type=Path,
            help="keep the generated key and admin password in this file (mode 600) instead of "
            "printing them; for the local embedded default only",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path | None = options["credentials_file"]
        if Organization.objects.exists():
            self.stdout.write("An organization already exists: nothing seeded.")
            if path is not None and path.is_file() and _stale(path):
                path.unlink()
                self.stdout.write(f"Removed {path}: its demo key is not in this database.")
            return
        credentials = seed()
        self.stdout.write(
            self.style.SUCCESS(
                f'Seeded organization "{ORG_NAME}", team "{TEAM_NAME}", key "{KEY_NAME}", '
                f"{len(DEMO_MODELS)} models on the mock provider."
            )
        )
        if path is not None:
            write_credentials(path, credentials)
            self.stdout.write(f"Demo key and admin password written to {path} (mode 600).")
        else:
            self._print_once(credentials)

    def _print_once(self, credentials: DemoCredentials) -> None:
        self.stdout.write(self.style.WARNING("=== Demo credentials: shown this once ==="))
        self.stdout.write(f"  API key: {credentials.api_key}")
        if credentials.admin_password:
            self.stdout.write(
                f"  admin login: {credentials.admin_username} / {credentials.admin_password}"
            )
        else:
            self.stdout.write(f'  user "{credentials.admin_username}" already existed: unchanged')
        self.stdout.write(self.style.WARNING("=== end of demo credentials ==="))
