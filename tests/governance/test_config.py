from __future__ import annotations

import re
import textwrap
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django import DjangoCaptureOnCommitCallbacks

from governance import config, policy, snapshots
from governance.actors import Actor
from governance.models import AuditEvent, Budget, MCPToolGrant, Team, VirtualKey
from governance.services import audit, keys

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "governance.yaml"
SECRET_RE = re.compile(r"sk-gw-[A-Za-z0-9_-]{20,}")

BASE = """\
providers:
  - {name: mock, kind: mock}
models:
  - name: claude-sonnet-4-6
    deployments: [{provider: mock, model: claude-sonnet-4-6}]
organizations:
  - name: acme
    teams:
      - name: backend
        budgets:
          - {amount_usd: 3000, period: month}
          - amount_usd: 300
            period: month
            models: ["claude-opus-*"]
            on_exhaust: {downgrade_to: claude-sonnet-4-6}
        keys:
          - name: vk-backend
            sub_keys: [{name: alice}]
mcp_servers:
  - {name: github, url: "http://mcp.internal/mcp"}
mcp_grants:
  - {team: backend, server: github, tools: ["get_*"]}
"""
OPUS_BUDGET = """\
          - amount_usd: 300
            period: month
            models: ["claude-opus-*"]
            on_exhaust: {downgrade_to: claude-sonnet-4-6}
"""


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example must apply with none of its variables set."""
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", EXAMPLE.read_text())):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "gov.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(path: Path, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("apply_config", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_app_config("governance").get_models()
    }


def secrets_in(output: str) -> dict[str, str]:
    """`label: secret` lines of the once-only secrets block."""
    return dict(re.findall(r"^\s+(\S+): (sk-gw-\S+)$", output, re.MULTILINE))


# --- the shipped example -------------------------------------------------------------------


def test_example_applies_on_fresh_db_and_second_run_changes_nothing() -> None:
    first, _ = run(EXAMPLE)
    assert "Applied" in first and "+ create team acme/backend" in first
    events = AuditEvent.objects.count()
    rows = row_counts()

    second, _ = run(EXAMPLE)

    assert second.strip().endswith("examples/governance.yaml: no changes.")
    assert not SECRET_RE.search(second)
    assert AuditEvent.objects.count() == events
    assert row_counts() == rows
    assert AuditEvent.objects.filter(verb=AuditEvent.Verb.CONFIG_APPLIED).count() == 1
    assert audit.verify_chain().ok


def test_example_serves_offline_through_the_mock_provider() -> None:
    out, _ = run(EXAMPLE)
    routing = snapshots.build_routing_table()
    targets = routing.targets_for("claude-sonnet-4-6")
    assert [t.provider.name for t in targets] == ["mock"]
    secret = secrets_in(out)["acme/vk-backend/alice"]
    key_policy = policy.load_policy(keys.hash_secret(secret))
    assert key_policy is not None
    assert key_policy.team_name == "backend"


def test_config_applied_event_is_recorded_by_the_config_actor() -> None:
    run(EXAMPLE)
    event = AuditEvent.objects.get(verb=AuditEvent.Verb.CONFIG_APPLIED)
    assert event.actor == "config:governance.yaml"
    assert "+ create organization acme" in event.note
    assert not SECRET_RE.search(event.note)
    per_object = AuditEvent.objects.exclude(verb=AuditEvent.Verb.CONFIG_APPLIED)
    assert per_object.filter(actor="config:governance.yaml").count() > 40


# --- invalid files change nothing ----------------------------------------------------------

INVALID = [
    (
        """\
        organizations:
          - name: acme
            teams:
              - name: backend
                budgets:
                  - {amount_usd: 10, period: montly}
        """,
        "line 6: organizations[0].teams[0].budgets[0].period: must be one of day, week, month, "
        "quarter, lifetime",
    ),
    (
        """\
        organizations:
          - name: acme
            timezone: Europe/Berln
        """,
        "line 3: organizations[0].timezone: 'Europe/Berln' is not an IANA time zone",
    ),
    (
        """\
        providers:
          - name: p
            kind: anthropic
            base_ulr: https://api.anthropic.com
        """,
        "line 4: providers[0].base_ulr: unknown field 'base_ulr' (did you mean base_url?)",
    ),
    (
        """\
        providers:
          - {name: mock, kind: mock}
        models:
          - name: claude-sonnet-4-6
            deployments:
              - {provider: mock, model: claude-sonnet-4-6}
              - {provider: bedrok-us, model: claude-sonnet-4-6}
        """,
        "line 7: models[0].deployments[1].provider: unknown provider 'bedrok-us'",
    ),
    (
        # Everything before the grant is valid and gets written, then rolled back.
        """\
        organizations:
          - name: newco
            teams: [{name: web}]
        mcp_servers:
          - {name: github, url: "http://mcp.internal/mcp"}
        mcp_grants:
          - {team: frontend, server: github, tools: ["*"]}
        """,
        "line 7: mcp_grants[0].team: unknown team 'frontend'",
    ),
    (
        """\
        organizations:
          - name: acme
            teams:
              - name: backend
              - name: backend
        """,
        "line 5: organizations[0].teams[1].name: this team name appears twice",
    ),
    (
        """\
        providers:
          - name: p
            kind: anthropic
            base_url: not a url
        """,
        "line 4: providers[0].base_url: Enter a valid URL.",
    ),
    (
        """\
        organizations:
          - name: acme
            keys:
              - name: vk
                secret: too-short
        """,
        "line 5: organizations[0].keys[0].secret: an imported secret needs at least 24",
    ),
    (
        """\
        organizations:
          - name: acme
            budgets: [{amount_usd: 1, on_exhaust: {downgrade_to: claude-nope}}]
        """,
        "line 3: organizations[0].budgets[0].on_exhaust.downgrade_to: unknown model 'claude-nope'",
    ),
    (
        "organizations: [{name: acme\n",
        "line 2: not valid YAML",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_invalid_file_names_line_and_field_and_changes_nothing(
    tmp_path: Path, text: str, expected: str
) -> None:
    run(EXAMPLE)
    before = row_counts()
    path = write(tmp_path, text, "bad.yaml")

    with pytest.raises(CommandError) as raised:
        run(path)

    assert f"bad.yaml {expected}" in str(raised.value)
    assert "Nothing was changed." in str(raised.value)
    assert row_counts() == before


def test_unknown_field_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "organizations: [{name: acme, budgets: [{amount_usd: 5, peroid: day}]}]")
    with pytest.raises(config.ConfigError) as raised:
        config.apply_file(path)
    assert "budgets[0].peroid: unknown field 'peroid' (did you mean period?)" in str(raised.value)


def test_all_schema_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          - {name: p, kind: nope}
        organizations:
          - {name: "not a slug", log_retention_days: -1}
        """,
    )
    with pytest.raises(config.ConfigError) as raised:
        config.apply_file(path)
    paths = {issue.path for issue in raised.value.issues}
    assert paths == {
        ("providers", 0, "kind"),
        ("organizations", 0, "name"),
        ("organizations", 0, "log_retention_days"),
    }


# --- dry run and the change list ------------------------------------------------------------


def test_dry_run_prints_the_diff_and_changes_nothing(
    tmp_path: Path, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    run(write(tmp_path, BASE))
    changed = (
        BASE.replace("{amount_usd: 3000, period: month}", "{amount_usd: 3500, period: month}")
        .replace(OPUS_BUDGET, "")
        .replace("      - name: backend\n", "      - name: frontend\n      - name: backend\n")
    )
    path = write(tmp_path, changed, "changed.yaml")
    before, events = row_counts(), AuditEvent.objects.count()

    with django_capture_on_commit_callbacks() as callbacks:
        out, _ = run(path, "--dry-run")

    assert "+ create team acme/frontend" in out
    assert "~ update budget team acme/backend month: amount $3,000.00 -> $3,500.00" in out
    assert "- delete budget team acme/backend month [claude-opus-*]" in out
    assert "Dry run of" in out and "nothing was changed" in out
    assert row_counts() == before
    assert AuditEvent.objects.count() == events
    assert callbacks == []  # no cache invalidation escapes a rolled-back run
    with django_capture_on_commit_callbacks() as applied:
        run(path)
    assert applied  # the real run does invalidate cached policy on commit


def test_budget_amount_change_updates_and_removed_budget_is_deleted(tmp_path: Path) -> None:
    run(write(tmp_path, BASE))
    team = Team.objects.get(name="backend")
    opus = Budget.objects.get(team=team, model_patterns=["claude-opus-*"])
    changed = BASE.replace("{amount_usd: 3000, period: month}", "{amount_usd: 3500, period: month}")
    changed = changed.replace('models: ["claude-opus-*"]', 'models: ["x-*"]')

    out, _ = run(write(tmp_path, changed, "changed.yaml"))

    assert "~ update budget team acme/backend month: amount $3,000.00 -> $3,500.00" in out
    assert "- delete budget team acme/backend month [claude-opus-*]" in out
    assert "+ create budget team acme/backend month [x-*]" in out
    assert not Budget.objects.filter(pk=opus.pk).exists()
    plain = Budget.objects.get(team=team, model_patterns=[])
    assert plain.amount_micros == 3_500_000_000
    assert "1 updated, 1 deleted" in out


def test_objects_missing_from_the_file_are_left_alone(tmp_path: Path) -> None:
    run(write(tmp_path, BASE))
    out, _ = run(write(tmp_path, "organizations: [{name: acme}]\n", "small.yaml"))
    assert "delete team" not in out and "delete key" not in out
    assert Team.objects.filter(name="backend").exists()
    assert VirtualKey.objects.filter(name="alice").exists()


def test_grants_of_a_declared_team_are_exactly_the_files(tmp_path: Path) -> None:
    run(write(tmp_path, BASE))
    without_grant = BASE.replace('  - {team: backend, server: github, tools: ["get_*"]}\n', "")
    out, _ = run(write(tmp_path, without_grant, "nogrant.yaml"))
    assert "- delete MCP grant team acme/backend on github" in out
    assert not MCPToolGrant.objects.exists()


# --- environment ---------------------------------------------------------------------------


def test_env_values_defaults_and_escapes_are_interpolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORG_TZ", "Europe/Berlin")
    monkeypatch.setenv("TEAM_BUDGET", "1234.5")
    path = write(
        tmp_path,
        """\
        organizations:
          - name: acme
            timezone: ${ORG_TZ}
            display_name: ${ORG_TITLE:-ACME Corp}
            teams:
              - name: backend
                description: "costs $${NOT_A_VAR}"
                budgets: [{amount_usd: "${TEAM_BUDGET}", period: month}]
        """,
    )
    config.apply_file(path)
    team = Team.objects.select_related("organization").get(name="backend")
    assert team.organization.timezone == "Europe/Berlin"
    assert team.organization.display_name == "ACME Corp"
    assert team.description == "costs ${NOT_A_VAR}"
    assert Budget.objects.get(team=team).amount_micros == 1_234_500_000


def test_missing_env_variable_is_an_error_naming_it_and_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          - name: anthropic-direct
            kind: anthropic
            api_key: ${ANTHROPIC_UPSTREAM_KEY_FOR_TEST}
        """,
        "env.yaml",
    )
    with pytest.raises(CommandError) as raised:
        run(path)
    message = str(raised.value)
    assert "env.yaml line 4: providers[0].api_key: environment variable" in message
    assert "ANTHROPIC_UPSTREAM_KEY_FOR_TEST is not set" in message


def test_secret_from_env_is_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM", "test-upstream-provider-credential")
    monkeypatch.setenv("VK_BAD", "sk-ant-this-is-not-a-gateway-secret-000")
    ok = write(
        tmp_path,
        "providers: [{name: a, kind: anthropic, api_key: '${UPSTREAM}'}]\n",
        "ok.yaml",
    )
    out, err = run(ok)
    assert "test-upstream-provider-credential" not in out + err
    assert "+ create provider a (credentials: api_key)" in out
    bad = write(tmp_path, "organizations: [{name: acme, keys: [{name: k, secret: '${VK_BAD}'}]}]")
    with pytest.raises(CommandError) as raised:
        run(bad)
    assert "sk-ant-this" not in str(raised.value)
    assert "keys[0].secret: this looks like an Anthropic API key" in str(raised.value)


# --- keys ----------------------------------------------------------------------------------


def test_generated_secret_is_printed_once_and_works(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    first, _ = run(path)
    secret = secrets_in(first)["acme/vk-backend"]
    assert policy.load_policy(keys.hash_secret(secret)) is not None

    second, _ = run(path)

    assert not SECRET_RE.search(second)
    assert policy.load_policy(keys.hash_secret(secret)) is not None


def test_dry_run_never_prints_or_keeps_a_secret(tmp_path: Path) -> None:
    out, _ = run(write(tmp_path, BASE), "--dry-run")
    assert "+ create key acme/vk-backend (a secret would be generated)" in out
    assert not SECRET_RE.search(out)
    assert not VirtualKey.objects.exists()


def test_imported_secret_works_and_rotates_when_env_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = "sk-gw-imported-secret-number-one-0001", "sk-gw-imported-secret-number-two-0002"
    path = write(
        tmp_path,
        BASE.replace(
            "- name: vk-backend\n", "- name: vk-backend\n            secret: ${VK_BACKEND}\n"
        ),
    )
    monkeypatch.setenv("VK_BACKEND", old)
    out, _ = run(path)
    assert "+ create key acme/vk-backend (secret imported from the file)" in out
    assert "acme/vk-backend:" not in out  # an imported secret is not echoed
    assert policy.load_policy(keys.hash_secret(old)) is not None

    again, _ = run(path)
    assert "no changes" in again

    monkeypatch.setenv("VK_BACKEND", new)
    rotated, _ = run(path)

    assert "~ update key acme/vk-backend: secret rotated" in rotated
    assert new not in rotated and old not in rotated
    assert policy.load_policy(keys.hash_secret(old)) is None
    assert policy.load_policy(keys.hash_secret(new)) is not None


def test_sub_keys_inherit_their_parents_team(tmp_path: Path) -> None:
    out, _ = run(write(tmp_path, BASE))
    alice = VirtualKey.objects.select_related("team", "parent").get(name="alice")
    assert alice.parent is not None and alice.parent.name == "vk-backend"
    assert alice.team is not None and alice.team.name == "backend"
    key_policy = policy.load_policy(keys.hash_secret(secrets_in(out)["acme/vk-backend/alice"]))
    assert key_policy is not None
    assert key_policy.team_name == "backend" and key_policy.parent_name == "vk-backend"


def test_revoked_key_in_the_file_is_left_revoked(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    run(path)
    key = VirtualKey.objects.get(name="vk-backend", parent__isnull=True)
    keys.revoke_key(actor=Actor.system("tests"), key=key)

    out, err = run(path)

    assert "key acme/vk-backend is revoked: left as it is" in err
    assert "no changes" in out
    key.refresh_from_db()
    assert key.revoked_at is not None
