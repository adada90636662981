"""Managed settings and sign-in keys as admins write them: the document's checks and merge
(governance/managed_settings.py), the models' validation, the config file (with lines), and
the availableModels every key of the team carries in its policy snapshot."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from governance import config, managed_settings, policy
from governance.models import OrganizationSignIn, TeamSignIn
from governance.services import common
from tests import factories
from tests.signin_support import ACTOR

pytestmark = pytest.mark.django_db


# --- the document ---------------------------------------------------------------------------


def test_a_document_is_normalized_and_unknown_settings_pass_through():
    parsed = managed_settings.parse(
        {
            "availableModels": ["claude-sonnet-4-6"],
            "env": {"CLAUDE_CODE_ENABLE_TELEMETRY": 1, "NAME": "x"},
            "statusLine": {"type": "command", "command": "echo hi"},
            "cleanupPeriodDays": 30,
            "someFutureSetting": {"nested": [1, "two"]},
        }
    )

    assert parsed["env"] == {"CLAUDE_CODE_ENABLE_TELEMETRY": "1", "NAME": "x"}
    assert parsed["someFutureSetting"] == {"nested": [1, "two"]}
    assert parsed["cleanupPeriodDays"] == 30


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"availableModels": []}, "availableModels: list should have at least 1 item"),
        ({"availableModels": ["a", "a"]}, "availableModels: 'a' appears twice"),
        ({"env": {"FLAG": True}}, "env.FLAG: write true/false in quotes"),
        ({"env": {"not a name": "x"}}, "env.not a name.[key]"),
        ({"permissions": {"deny": "Bash"}}, "permissions.deny: input should be a valid list"),
        ({"statusLine": {"type": "command"}}, "statusLine.command: field required"),
        ({"forceLoginGatewayUrl": "https://gw"}, "honoured only in the managed-settings.json"),
        ({"released": dt.date(2026, 1, 1)}, "date is not a JSON value"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_documents_claude_code_would_misread_are_refused(document, expected):
    with pytest.raises(managed_settings.DocumentError) as raised:
        managed_settings.parse(document)

    assert expected in str(raised.value)


def test_team_layers_replace_allow_lists_join_deny_lists_and_hooks_and_merge_env():
    base = {
        "env": {"A": "1", "B": "org"},
        "permissions": {"allow": ["Read"], "deny": ["Bash(rm:*)"], "defaultMode": "plan"},
        "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": []}]},
        "availableModels": ["claude-opus-4-7"],
        "model": "claude-opus-4-7",
    }
    team = {
        "env": {"B": "team"},
        "permissions": {"allow": ["Edit"], "deny": ["WebFetch", "Bash(rm:*)"]},
        "hooks": {"PreToolUse": [{"matcher": "Edit", "hooks": []}], "Stop": []},
        "availableModels": ["claude-sonnet-4-6"],
    }

    merged = managed_settings.merge(base, team)

    assert merged == {
        "env": {"A": "1", "B": "team"},
        "permissions": {
            "allow": ["Edit"],
            "deny": ["Bash(rm:*)", "WebFetch"],
            "defaultMode": "plan",
        },
        "hooks": {
            "PreToolUse": [{"matcher": "Bash", "hooks": []}, {"matcher": "Edit", "hooks": []}],
            "Stop": [],
        },
        "availableModels": ["claude-sonnet-4-6"],
        "model": "claude-opus-4-7",
    }
    assert base["env"] == {"A": "1", "B": "org"}  # the layers themselves are left alone


def test_no_layer_is_no_policy_and_an_empty_one_is_an_empty_policy():
    assert managed_settings.resolve(None, None) is None
    assert managed_settings.resolve({}, None) == {}


def test_the_checksum_is_the_sha256_of_sorted_compact_json():
    envelope = managed_settings.envelope({"b": 1, "a": "é"})

    # printf '{"a":"é","b":1}' | sha256sum (UTF-8, as Claude Code hashes it)
    assert envelope["checksum"] == (
        "sha256:aa58fba8483623bed37c1b02edfccbdd9a53123837c20bfa4cb4049993a2872e"
    )
    assert envelope["uuid"] == envelope["checksum"]


# --- models, snapshots ----------------------------------------------------------------------


def test_a_sign_in_key_must_be_a_top_level_key_of_the_team():
    team = factories.team()
    other = factories.virtual_key(team=factories.team(organization=team.organization))
    own = factories.virtual_key(team=team)
    sub = factories.virtual_key(parent=own)

    for key, message in ((other, "a key of this team"), (sub, "top-level key")):
        with pytest.raises(ValidationError) as raised:
            common.save_instance(TeamSignIn(team=team, signin_key=key), actor=ACTOR)
        assert message in str(raised.value)
    common.save_instance(TeamSignIn(team=team, signin_key=own), actor=ACTOR)


def test_an_invalid_document_is_refused_in_the_admin_too():
    team = factories.team()

    with pytest.raises(ValidationError) as raised:
        common.save_instance(
            TeamSignIn(team=team, managed_settings={"availableModels": "claude-opus-4-7"}),
            actor=ACTOR,
        )

    assert "availableModels: input should be a valid list" in str(raised.value)


def test_every_key_of_the_team_carries_its_available_models():
    team = factories.team()
    key = factories.virtual_key(team=team)
    sub_key = factories.issued_key(parent=key)
    other_team_key = factories.virtual_key(team=factories.team(organization=team.organization))
    common.save_instance(
        OrganizationSignIn(
            organization=team.organization, managed_settings={"availableModels": ["claude-*"]}
        ),
        actor=ACTOR,
    )
    common.save_instance(
        TeamSignIn(team=team, managed_settings={"availableModels": ["claude-sonnet-4-6"]}),
        actor=ACTOR,
    )

    def available(lookup_hash: str) -> tuple[str, ...]:
        loaded = policy.load_policy(lookup_hash)
        assert loaded is not None
        return loaded.available_models

    assert available(sub_key.key.lookup_hash) == ("claude-sonnet-4-6",)
    assert available(key.lookup_hash) == ("claude-sonnet-4-6",)
    assert available(other_team_key.lookup_hash) == ("claude-*",)


# --- the config file ------------------------------------------------------------------------

FILE = """\
organizations:
  - name: acme
    managed_settings:
      env: {CLAUDE_CODE_ENABLE_TELEMETRY: 1}
      permissions: {deny: ["Bash(rm -rf:*)"]}
    teams:
      - name: backend
        idp_groups: [eng-backend]
        signin_key: vk-backend
        managed_settings:
          availableModels: [claude-sonnet-4-6]
        keys:
          - name: vk-backend
          - name: vk-backend-ci
"""


def apply(tmp_path: Path, text: str) -> config.ApplyResult:
    path = tmp_path / "gov.yaml"
    path.write_text(textwrap.dedent(text))
    return config.apply_file(path)


def test_the_config_file_sets_sign_in_keys_and_managed_settings(tmp_path: Path):
    first = apply(tmp_path, FILE)
    again = apply(tmp_path, FILE)

    team_layer = TeamSignIn.objects.get()
    assert team_layer.signin_key is not None and team_layer.signin_key.name == "vk-backend"
    assert team_layer.managed_settings == {"availableModels": ["claude-sonnet-4-6"]}
    assert OrganizationSignIn.objects.get().managed_settings == {
        "env": {"CLAUDE_CODE_ENABLE_TELEMETRY": "1"},
        "permissions": {"deny": ["Bash(rm -rf:*)"]},
    }
    assert any("Claude Code sign-in (team)" in line for line in first.changes)
    assert not again.changed


def test_what_the_file_leaves_out_is_removed(tmp_path: Path):
    apply(tmp_path, FILE)

    apply(
        tmp_path,
        """\
        organizations:
          - name: acme
            teams:
              - name: backend
                keys: [{name: vk-backend}, {name: vk-backend-ci}]
        """,
    )

    assert not TeamSignIn.objects.exists() and not OrganizationSignIn.objects.exists()


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            "signin_key: vk-backend",
            "signin_key: vk-nope",
            "line 9: organizations[0].teams[0].signin_key: unknown key 'vk-nope'",
        ),
        (
            "availableModels: [claude-sonnet-4-6]",
            "availableModels: []",
            "line 11: organizations"
            "[0].teams[0].managed_settings.availableModels: list should have at least 1 item",
        ),
        (
            "{CLAUDE_CODE_ENABLE_TELEMETRY: 1}",
            "{CLAUDE_CODE_ENABLE_TELEMETRY: true}",
            "line 4: "
            "organizations[0].managed_settings.env.CLAUDE_CODE_ENABLE_TELEMETRY: write true/false",
        ),
    ],
)
def test_config_errors_name_the_line_and_field(tmp_path: Path, replace, by, expected):
    with pytest.raises(config.ConfigError) as raised:
        apply(tmp_path, FILE.replace(replace, by))

    assert expected in str(raised.value)
    assert not TeamSignIn.objects.exists()
