from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from governance import policy
from governance.management.commands import seed_demo
from governance.models import AuditEvent, Budget, Deployment, Organization, VirtualKey
from governance.money import usd_to_micros
from governance.services.keys import hash_secret
from tests import factories

pytestmark = pytest.mark.django_db


def run_seed(**options: object) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def test_seeds_demo_org_team_key_budgets_and_models(tmp_path: Path) -> None:
    run_seed(credentials_file=tmp_path / "creds")

    org = Organization.objects.get(name="demo")
    assert org.timezone == "UTC"
    key = VirtualKey.objects.get(name="demo-key")
    assert key.team is not None and key.team.name == "platform"
    assert key.rate_limit.requests_per_minute == 120
    amounts = {b.scope: b.amount_micros for b in Budget.objects.filter(organization=org)}
    assert amounts == {"organization": usd_to_micros(1000), "team": usd_to_micros(200)}
    served = {d.route.public_name: d.provider.kind for d in Deployment.objects.all()}
    assert served == dict.fromkeys(seed_demo.DEMO_MODELS, "mock")


def test_seeding_is_audited_like_any_other_change(tmp_path: Path) -> None:
    run_seed(credentials_file=tmp_path / "creds")

    assert AuditEvent.objects.filter(actor="command:seed_demo").count() >= 10


def test_credentials_file_is_private_and_holds_working_secrets(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    output = run_seed(credentials_file=path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = seed_demo.read_credentials(path)
    assert values["DEMO_API_KEY"] not in output
    admin = get_user_model().objects.get(username=values["DEMO_ADMIN_USERNAME"])
    assert admin.is_superuser and admin.check_password(values["DEMO_ADMIN_PASSWORD"])
    assert VirtualKey.objects.filter(lookup_hash=hash_secret(values["DEMO_API_KEY"])).exists()


def test_demo_key_secret_loads_a_policy(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    run_seed(credentials_file=path)

    secret = seed_demo.read_credentials(path)["DEMO_API_KEY"]
    loaded = policy.load_policy(hash_secret(secret))

    assert loaded is not None
    assert (loaded.organization_name, loaded.team_name, loaded.key_name) == (
        "demo",
        "platform",
        "demo-key",
    )
    assert [rule.requests_per_minute for rule in loaded.rate_limits] == [120]
    assert {rule.scope for rule in loaded.budgets} == {"organization", "team"}


def test_second_run_does_nothing_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    run_seed(credentials_file=path)
    first_file = path.read_text()
    events = AuditEvent.objects.count()

    output = run_seed(credentials_file=path)

    assert "nothing seeded" in output
    assert AuditEvent.objects.count() == events
    assert Organization.objects.count() == 1
    assert path.read_text() == first_file


def test_any_existing_organization_prevents_seeding() -> None:
    factories.organization(name="acme")

    output = run_seed()

    assert "nothing seeded" in output
    assert not Organization.objects.filter(name="demo").exists()


def test_credentials_of_another_database_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    path.write_text("DEMO_API_KEY=sk-gw-not-in-this-database\n")
    factories.organization(name="acme")

    run_seed(credentials_file=path)

    assert not path.exists()


def test_without_a_credentials_file_the_secrets_are_printed_once() -> None:
    output = run_seed()

    assert "API key: sk-gw-" in output
    assert "admin login: admin / " in output


def test_an_existing_admin_user_is_left_untouched(tmp_path: Path) -> None:
    admin = get_user_model().objects.create_user(username="admin", password="kept-password-1")
    path = tmp_path / "creds"

    run_seed(credentials_file=path)

    admin.refresh_from_db()
    assert admin.check_password("kept-password-1") and not admin.is_superuser
    assert seed_demo.read_credentials(path)["DEMO_ADMIN_PASSWORD"] == ""
