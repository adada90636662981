from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from governance import policy, selectors
from governance.actors import Actor
from governance.models import AuditEvent, VirtualKey
from governance.services import keys
from tests import factories

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def alice(django_user_model: Any) -> Actor:
    return Actor.of_user(django_user_model.objects.create_user(username="alice"))


def row_values(key: VirtualKey) -> list[str]:
    key = VirtualKey.objects.get(pk=key.pk)
    return [str(getattr(key, f.attname)) for f in VirtualKey._meta.concrete_fields]


def events_for(key: VirtualKey, verb: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            subject_type="governance.VirtualKey", subject_id=str(key.pk), verb=verb
        ).order_by("id")
    )


def assert_event_has_no_secrets(event: AuditEvent, *secrets: str) -> None:
    """Neither a secret nor its lookup hash may appear anywhere in the event's content."""
    blob = json.dumps([event.before, event.after, event.note, event.subject_repr, event.actor])
    forbidden = [value for secret in secrets for value in (secret, keys.hash_secret(secret))]
    assert not [value for value in forbidden if value in blob]


def days_from_now(days: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(days=days)


# --- issuing ----------------------------------------------------------------------------------


def test_generated_secret_has_gateway_prefix_and_is_not_stored() -> None:
    issued = factories.issued_key()

    assert issued.secret.startswith("sk-gw-")
    assert len(issued.secret) > 40
    stored = VirtualKey.objects.get(pk=issued.key.pk)
    assert stored.prefix == issued.secret[:12]
    assert stored.lookup_hash == keys.hash_secret(issued.secret)
    assert not [value for value in row_values(stored) if issued.secret in value]


def test_issued_key_repr_shows_only_the_prefix() -> None:
    issued = factories.issued_key()

    assert issued.secret not in repr(issued)
    assert issued.key.prefix in repr(issued)


def test_two_keys_get_different_secrets() -> None:
    first, second = factories.issued_key(), factories.issued_key()

    assert first.secret != second.secret
    assert first.key.lookup_hash != second.key.lookup_hash


def test_key_is_found_by_the_hash_of_its_secret() -> None:
    issued = factories.issued_key()

    found = selectors.key_by_lookup_hash(keys.hash_secret(issued.secret))

    assert found == (issued.key, False)
    snapshot = policy.load_policy(keys.hash_secret(issued.secret))
    assert snapshot is not None
    assert snapshot.key_id == issued.key.pk
    assert snapshot.prefix == issued.secret[:12]


def test_unknown_secret_finds_no_key() -> None:
    factories.issued_key()

    assert selectors.key_by_lookup_hash(keys.hash_secret("sk-gw-not-a-real-key")) is None
    assert policy.load_policy(keys.hash_secret("sk-gw-not-a-real-key")) is None


def test_imported_secret_is_used_as_given() -> None:
    secret = "sk-gw-imported-0123456789abcdefghij"

    issued = factories.issued_key(secret=secret)

    assert issued.secret == secret
    assert policy.load_policy(keys.hash_secret(secret)) is not None


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("sk-gw-short", "at least 24 characters"),
        ("sk-ant-api03-" + "x" * 40, "Anthropic API key"),
    ],
)
def test_unsuitable_imported_secret_is_refused(secret: str, reason: str) -> None:
    org = factories.organization()

    with pytest.raises(ValidationError, match=reason):
        factories.issued_key(organization=org, secret=secret)

    assert not VirtualKey.objects.filter(organization=org).exists()


def test_importing_a_secret_already_in_use_is_refused() -> None:
    issued = factories.issued_key()

    with pytest.raises(ValidationError, match="already in use"):
        factories.issued_key(secret=issued.secret)


def test_importing_another_keys_grace_secret_is_refused() -> None:
    old = factories.issued_key()
    keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key, grace=HOUR)

    with pytest.raises(ValidationError, match="already in use"):
        factories.issued_key(secret=old.secret)

    found = selectors.key_by_lookup_hash(keys.hash_secret(old.secret))
    assert found is not None and found[0].pk == old.key.pk


def test_key_may_take_back_its_own_grace_secret() -> None:
    first = factories.issued_key()
    second = keys.rotate_key(actor=factories.TEST_ACTOR, key=first.key, grace=HOUR)

    keys.rotate_key(actor=factories.TEST_ACTOR, key=second.key, secret=first.secret)

    assert policy.load_policy(keys.hash_secret(first.secret)) is not None
    assert policy.load_policy(keys.hash_secret(second.secret)) is None


def test_rotating_to_another_keys_grace_secret_is_refused() -> None:
    old = factories.issued_key()
    keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key, grace=HOUR)
    other = factories.virtual_key()

    with pytest.raises(ValidationError, match="already in use"):
        keys.rotate_key(actor=factories.TEST_ACTOR, key=other, secret=old.secret)


# --- revoked and expired keys -----------------------------------------------------------------


def test_revoked_key_yields_no_policy() -> None:
    issued = factories.issued_key()

    keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key, reason="left the company")

    assert issued.key.revoked_at is not None
    assert not issued.key.is_active
    assert policy.load_policy(keys.hash_secret(issued.secret)) is None


def test_expired_key_snapshot_reports_expiry() -> None:
    issued = factories.issued_key(expires_at=days_from_now(-1))

    snapshot = policy.load_policy(keys.hash_secret(issued.secret))

    assert snapshot is not None
    assert snapshot.is_expired(timezone.now())
    assert not issued.key.is_active


def test_key_expiring_later_is_not_expired_yet() -> None:
    expires = days_from_now(1)
    issued = factories.issued_key(expires_at=expires)

    snapshot = policy.load_policy(keys.hash_secret(issued.secret))

    assert snapshot is not None
    assert not snapshot.is_expired(timezone.now())
    assert snapshot.is_expired(expires)


def test_revoking_a_parent_revokes_its_sub_keys() -> None:
    parent = factories.issued_key()
    subs = [factories.issued_key(parent=parent.key) for _ in range(2)]
    other = factories.issued_key(organization=parent.key.organization)

    keys.revoke_key(actor=factories.TEST_ACTOR, key=parent.key)

    for issued in [parent, *subs]:
        assert VirtualKey.objects.get(pk=issued.key.pk).revoked_at is not None
        assert policy.load_policy(keys.hash_secret(issued.secret)) is None
    assert VirtualKey.objects.get(pk=other.key.pk).revoked_at is None


def test_revoking_a_sub_key_leaves_its_parent_active() -> None:
    parent = factories.issued_key()
    sub = factories.issued_key(parent=parent.key)

    keys.revoke_key(actor=factories.TEST_ACTOR, key=sub.key)

    assert policy.load_policy(keys.hash_secret(parent.secret)) is not None
    assert policy.load_policy(keys.hash_secret(sub.secret)) is None


def test_revoking_twice_writes_one_event() -> None:
    issued = factories.issued_key()

    keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)
    first_revoked_at = issued.key.revoked_at
    keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)

    assert issued.key.revoked_at == first_revoked_at
    assert len(events_for(issued.key, AuditEvent.Verb.KEY_REVOKED)) == 1


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_without_grace_invalidates_old_secret_at_once() -> None:
    old = factories.issued_key()

    new = keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key)

    assert new.secret != old.secret
    assert new.key.pk == old.key.pk
    assert policy.load_policy(keys.hash_secret(old.secret)) is None
    assert policy.load_policy(keys.hash_secret(new.secret)) is not None
    stored = VirtualKey.objects.get(pk=old.key.pk)
    assert stored.previous_lookup_hash is None
    assert stored.previous_valid_until is None
    assert stored.prefix == new.secret[:12]


def test_rotation_with_grace_keeps_old_secret_until_grace_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = factories.issued_key()

    new = keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key, grace=HOUR)

    grace_end = VirtualKey.objects.get(pk=old.key.pk).previous_valid_until
    assert grace_end is not None
    assert policy.load_policy(keys.hash_secret(old.secret)) is not None
    assert policy.load_policy(keys.hash_secret(new.secret)) is not None
    assert selectors.key_by_lookup_hash(keys.hash_secret(old.secret)) == (new.key, True)

    after_grace = grace_end + dt.timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: after_grace)
    assert policy.load_policy(keys.hash_secret(old.secret)) is None
    assert policy.load_policy(keys.hash_secret(new.secret)) is not None


def test_snapshot_through_old_secret_expires_when_grace_ends() -> None:
    old = factories.issued_key(expires_at=days_from_now(30))

    new = keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key, grace=HOUR)

    stored = VirtualKey.objects.get(pk=old.key.pk)
    via_old = policy.load_policy(keys.hash_secret(old.secret))
    via_new = policy.load_policy(keys.hash_secret(new.secret))
    assert via_old is not None and via_new is not None
    grace_end = stored.previous_valid_until
    assert grace_end is not None
    assert via_old.expires_at == grace_end
    assert via_new.expires_at == stored.expires_at
    assert via_old.is_expired(grace_end)
    assert not via_new.is_expired(grace_end)


def test_grace_never_outlives_the_key_itself() -> None:
    expires = days_from_now(0.01)  # about 15 minutes, sooner than the grace
    old = factories.issued_key(expires_at=expires)

    keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key, grace=HOUR)

    via_old = policy.load_policy(keys.hash_secret(old.secret))
    assert via_old is not None
    assert via_old.expires_at == expires


def test_rotating_twice_with_grace_retires_the_oldest_secret() -> None:
    first = factories.issued_key()
    second = keys.rotate_key(actor=factories.TEST_ACTOR, key=first.key, grace=HOUR)

    third = keys.rotate_key(actor=factories.TEST_ACTOR, key=second.key, grace=HOUR)

    assert policy.load_policy(keys.hash_secret(first.secret)) is None
    assert policy.load_policy(keys.hash_secret(second.secret)) is not None
    assert policy.load_policy(keys.hash_secret(third.secret)) is not None


def test_revoked_key_cannot_be_rotated() -> None:
    issued = factories.issued_key()
    keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)

    with pytest.raises(ValidationError, match="revoked"):
        keys.rotate_key(actor=factories.TEST_ACTOR, key=issued.key)


def test_revoked_key_cannot_be_rotated_through_a_stale_instance() -> None:
    issued = factories.issued_key()
    stale = VirtualKey.objects.get(pk=issued.key.pk)
    keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)

    with pytest.raises(ValidationError, match="revoked"):
        keys.rotate_key(actor=factories.TEST_ACTOR, key=stale)

    assert policy.load_policy(keys.hash_secret(issued.secret)) is None


@pytest.mark.parametrize("secret", ["too-short", "sk-ant-api03-" + "y" * 40])
def test_rotation_refuses_an_unsuitable_secret(secret: str) -> None:
    issued = factories.issued_key()

    with pytest.raises(ValidationError):
        keys.rotate_key(actor=factories.TEST_ACTOR, key=issued.key, secret=secret)

    assert policy.load_policy(keys.hash_secret(issued.secret)) is not None


def test_revoking_a_key_revokes_its_grace_secret_too() -> None:
    old = factories.issued_key()
    new = keys.rotate_key(actor=factories.TEST_ACTOR, key=old.key, grace=HOUR)

    keys.revoke_key(actor=factories.TEST_ACTOR, key=new.key)

    assert policy.load_policy(keys.hash_secret(old.secret)) is None
    assert policy.load_policy(keys.hash_secret(new.secret)) is None


# --- sub-keys and organizations ---------------------------------------------------------------


def test_sub_key_cannot_have_sub_keys() -> None:
    parent = factories.virtual_key()
    sub = factories.virtual_key(parent=parent)

    with pytest.raises(ValidationError, match="sub-key cannot have sub-keys"):
        factories.virtual_key(parent=sub)


def test_sub_key_takes_its_parents_team_and_project() -> None:
    org = factories.organization()
    team, other_team = factories.team(organization=org), factories.team(organization=org)
    project, other_project = (
        factories.project(organization=org),
        factories.project(organization=org),
    )
    parent = factories.virtual_key(organization=org, team=team, project=project)

    sub = keys.create_key(
        actor=factories.TEST_ACTOR,
        organization=org,
        parent=parent,
        name="alice",
        team=other_team,
        project=other_project,
    ).key

    assert (sub.team, sub.project) == (team, project)
    snapshot = policy.load_policy(sub.lookup_hash)
    assert snapshot is not None
    assert (snapshot.team_id, snapshot.project_id) == (team.pk, project.pk)
    assert (snapshot.parent_id, snapshot.parent_name) == (parent.pk, parent.name)


def test_sub_key_issued_under_a_revoked_parent_yields_no_policy() -> None:
    parent = factories.virtual_key()
    keys.revoke_key(actor=factories.TEST_ACTOR, key=parent)

    sub = factories.issued_key(parent=parent)

    assert sub.key.revoked_at is None
    assert policy.load_policy(keys.hash_secret(sub.secret)) is None


def test_sub_key_expires_with_its_parent() -> None:
    parent_expiry = days_from_now(2)
    parent = factories.virtual_key(expires_at=parent_expiry)
    sub = factories.issued_key(parent=parent, expires_at=days_from_now(10))

    snapshot = policy.load_policy(keys.hash_secret(sub.secret))

    assert snapshot is not None
    assert snapshot.expires_at == parent_expiry


@pytest.mark.parametrize("field", ["team", "project", "parent"])
def test_owner_from_another_organization_is_refused(field: str) -> None:
    org, other = factories.organization(), factories.organization()
    foreign: dict[str, Any] = {}
    if field == "team":
        foreign["team"] = factories.team(organization=other)
    elif field == "project":
        foreign["project"] = factories.project(organization=other)
    else:
        foreign["parent"] = factories.virtual_key(organization=other)

    with pytest.raises(ValidationError, match="another organization"):
        keys.create_key(actor=factories.TEST_ACTOR, organization=org, name="crossing", **foreign)

    assert not VirtualKey.objects.filter(organization=org).exists()


def test_key_names_are_unique_within_an_organization() -> None:
    org = factories.organization()
    factories.virtual_key(organization=org, name="ci")

    with pytest.raises(ValidationError):
        factories.virtual_key(organization=org, name="ci")

    factories.virtual_key(organization=factories.organization(), name="ci")


# --- audit trail ------------------------------------------------------------------------------


def test_creating_a_key_is_audited_without_secrets(alice: Actor) -> None:
    issued = keys.create_key(actor=alice, organization=factories.organization(), name="ci")

    [event] = events_for(issued.key, AuditEvent.Verb.KEY_CREATED)
    assert (event.actor, event.actor_user_id) == (alice.label, alice.user_id)
    assert event.before is None
    assert event.after is not None
    assert event.after["name"] == "ci"
    assert event.after["lookup_hash"] == "set"
    assert event.after["previous_lookup_hash"] == ""
    assert_event_has_no_secrets(event, issued.secret)


def test_rotating_a_key_is_audited_without_secrets(alice: Actor) -> None:
    old = factories.issued_key()

    new = keys.rotate_key(actor=alice, key=old.key, grace=HOUR)

    [event] = events_for(old.key, AuditEvent.Verb.KEY_ROTATED)
    assert event.actor == alice.label
    assert event.before is not None and event.after is not None
    assert event.before["prefix"] == old.secret[:12]
    assert event.after["prefix"] == new.secret[:12]
    assert event.after["previous_lookup_hash"] == "set"
    assert event.note == "old secret valid for 3600 s more"
    assert_event_has_no_secrets(event, old.secret, new.secret)


def test_revoking_is_audited_for_the_key_and_each_sub_key(alice: Actor) -> None:
    parent = factories.issued_key()
    sub = factories.issued_key(parent=parent.key)

    keys.revoke_key(actor=alice, key=parent.key, reason="laptop stolen")

    for issued in (parent, sub):
        [event] = events_for(issued.key, AuditEvent.Verb.KEY_REVOKED)
        assert (event.actor, event.note) == (alice.label, "laptop stolen")
        assert event.before is not None and event.after is not None
        assert event.before["revoked_at"] is None
        assert event.after["revoked_at"] is not None
        assert_event_has_no_secrets(event, issued.secret)


def test_key_services_leave_a_verifiable_chain() -> None:
    from governance.services import audit

    issued = factories.issued_key()
    factories.issued_key(parent=issued.key)
    keys.rotate_key(actor=factories.TEST_ACTOR, key=issued.key, grace=HOUR)
    keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)

    assert audit.verify_chain().ok
