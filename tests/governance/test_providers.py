from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from pytest_django import DjangoCaptureOnCommitCallbacks

from governance import crypto, policy, snapshots
from governance.models import AuditEvent, Deployment, ModelRoute, Provider
from governance.services import audit, common, providers
from tests import factories

pytestmark = pytest.mark.django_db

FIRST = "test-upstream-first-0123456789"
SECOND = "test-upstream-second-9876543210"


@pytest.fixture
def provider() -> Provider:
    obj = Provider(name="anthropic-direct", kind="anthropic", base_url="https://api.anthropic.com")
    common.save_instance(obj, actor=factories.TEST_ACTOR)
    return obj


def stored(provider: Provider) -> Provider:
    return Provider.objects.get(pk=provider.pk)


def provider_events(provider: Provider) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            subject_type="governance.Provider", subject_id=str(provider.pk)
        ).order_by("id")
    )


def event_text(event: AuditEvent) -> str:
    return json.dumps([event.before, event.after, event.note, event.subject_repr])


def test_credentials_are_stored_encrypted_and_read_back(provider: Provider) -> None:
    wrote = providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )

    row = stored(provider)
    assert wrote
    assert row.has_credentials
    assert FIRST not in row.credentials_encrypted
    assert crypto.decrypt_credentials(row.credentials_encrypted) == {"api_key": FIRST}
    assert providers.credential_fields(row) == ["api_key"]


def test_setting_the_same_credentials_again_writes_nothing(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )
    row = stored(provider)
    events = AuditEvent.objects.count()

    wrote = providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=row, credentials={"api_key": FIRST}
    )

    assert not wrote
    assert AuditEvent.objects.count() == events
    after = stored(provider)
    assert after.credentials_encrypted == row.credentials_encrypted
    assert after.updated_at == row.updated_at


def test_blank_credential_fields_are_dropped(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR,
        provider=provider,
        credentials={"api_key": FIRST, "organization": ""},
    )

    assert providers.credential_fields(stored(provider)) == ["api_key"]


def test_first_credentials_are_audited_without_the_secret(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )

    event = provider_events(provider)[-1]
    assert event.verb == AuditEvent.Verb.UPDATED
    assert event.note == "credentials set: api_key"
    assert event.before is not None and event.after is not None
    assert (event.before["credentials_encrypted"], event.after["credentials_encrypted"]) == (
        "",
        "set",
    )
    assert FIRST not in event_text(event)
    assert stored(provider).credentials_encrypted not in event_text(event)


def test_replacing_a_credential_is_audited_without_either_secret(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )
    events = len(provider_events(provider))
    old_ciphertext = stored(provider).credentials_encrypted

    wrote = providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": SECOND}
    )

    new_events = provider_events(provider)[events:]
    assert wrote
    assert [e.verb for e in new_events] == [AuditEvent.Verb.UPDATED]
    assert new_events[0].note == "credentials set: api_key"
    for secret in (FIRST, SECOND, old_ciphertext, stored(provider).credentials_encrypted):
        assert secret not in event_text(new_events[0])
    assert crypto.decrypt_credentials(stored(provider).credentials_encrypted) == {"api_key": SECOND}
    assert audit.verify_chain().ok


def test_clearing_credentials_is_audited(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )

    assert providers.set_credentials(actor=factories.TEST_ACTOR, provider=provider, credentials={})

    assert not stored(provider).has_credentials
    event = provider_events(provider)[-1]
    assert event.note == "credentials set: none"
    assert event.after is not None and event.after["credentials_encrypted"] == ""


def test_replacing_a_credential_invalidates_policy_on_commit(
    provider: Provider, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )
    version = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True):
        providers.set_credentials(
            actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": SECOND}
        )

    assert policy.current_version() > version


def test_routing_table_carries_the_decrypted_credentials(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )
    route = ModelRoute(public_name="claude-sonnet-4-6")
    common.save_instance(route, actor=factories.TEST_ACTOR)
    common.save_instance(
        Deployment(route=route, provider=provider, upstream_model="claude-sonnet-4-6"),
        actor=factories.TEST_ACTOR,
    )

    [target] = snapshots.build_routing_table().targets_for("claude-sonnet-4-6")

    assert dict(target.provider.credentials) == {"api_key": FIRST}
    assert FIRST not in repr(target)


def test_credentials_under_another_encryption_key_fail_clearly(provider: Provider) -> None:
    with override_settings(GATEWAY_ENCRYPTION_KEY=Fernet.generate_key().decode()):
        providers.set_credentials(
            actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
        )

    with (
        override_settings(GATEWAY_ENCRYPTION_KEY=Fernet.generate_key().decode()),
        pytest.raises(ImproperlyConfigured, match="GATEWAY_ENCRYPTION_KEY"),
    ):
        providers.credential_fields(stored(provider))


def test_provider_snapshot_never_contains_the_ciphertext(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )
    row = stored(provider)

    assert audit.snapshot(row)["credentials_encrypted"] == "set"
    assert row.credentials_encrypted not in json.dumps(audit.snapshot(row))
