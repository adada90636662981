from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.test import Client, override_settings
from pytest_django import DjangoCaptureOnCommitCallbacks

from governance import crypto, policy, snapshots
from governance.config import applier
from governance.config.errors import ConfigError
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


# --- outbound guard: where a base URL may point ------------------------------------------------

FORBIDDEN_BASE_URLS = [
    "http://127.0.0.1:8080",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1",
    "http://localhost:9000",  # a name that resolves to loopback
    "http://[::1]:8080",
]


@pytest.mark.parametrize("base_url", FORBIDDEN_BASE_URLS)
def test_a_base_url_on_a_non_public_address_is_refused(settings: Any, base_url: str) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []
    provider = Provider(name="inside", kind="anthropic", base_url=base_url)

    with pytest.raises(ValidationError) as refused:
        common.save_instance(provider, actor=factories.TEST_ACTOR)

    assert "GATEWAY_OUTBOUND_ALLOWED_NETWORKS" in str(refused.value.message_dict["base_url"])
    assert not Provider.objects.filter(name="inside").exists()


def test_a_base_url_in_an_allow_listed_network_is_accepted(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = ["10.20.0.0/16"]

    common.save_instance(
        Provider(name="self-hosted", kind="anthropic", base_url="http://10.20.3.4:8000"),
        actor=factories.TEST_ACTOR,
    )

    assert Provider.objects.filter(name="self-hosted").exists()


def test_the_refusal_does_not_echo_the_base_url(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []
    provider = Provider(name="inside", kind="anthropic", base_url="http://127.0.0.1/tok-123456")

    with pytest.raises(ValidationError) as refused:
        common.save_instance(provider, actor=factories.TEST_ACTOR)

    assert "tok-123456" not in str(refused.value)


def test_the_admin_refuses_a_metadata_base_url(admin_client: Client, settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []

    response = admin_client.post(
        "/admin/governance/provider/add/",
        {**provider_form(base_url="http://169.254.169.254/latest"), "api_key": FIRST},
    )

    assert response.status_code == 200
    assert "169.254.169.254 is a loopback, private, link-local" in response.content.decode()
    assert not Provider.objects.filter(name="admin-made").exists()


def test_apply_config_refuses_a_private_base_url(tmp_path: Path, settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []
    path = config_file(tmp_path, base_url="http://10.0.0.1:8000")

    with pytest.raises(ConfigError) as refused:
        applier.apply_file(path, env={})

    assert "providers[0].base_url: 10.0.0.1 is a loopback, private" in str(refused.value)
    assert not Provider.objects.filter(name="from-file").exists()


# --- a new base URL needs the credentials again ------------------------------------------------

NEW_HOST = "https://llm-proxy.example.com"


def with_key(provider: Provider) -> Provider:
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": FIRST}
    )
    return stored(provider)


def test_moving_a_provider_without_its_credentials_is_refused(provider: Provider) -> None:
    row = with_key(provider)
    row.base_url = NEW_HOST

    with pytest.raises(ValidationError) as refused:
        providers.save_provider(actor=factories.TEST_ACTOR, provider=row)

    assert refused.value.message_dict["base_url"] == [providers.MOVED_CREDENTIALS]
    assert "re-enter the credentials when changing the base URL" in providers.MOVED_CREDENTIALS
    assert stored(provider).base_url == "https://api.anthropic.com"


def test_moving_a_provider_with_its_credentials_entered_again_is_saved(
    provider: Provider,
) -> None:
    row = with_key(provider)
    row.base_url = NEW_HOST

    assert providers.save_provider(
        actor=factories.TEST_ACTOR, provider=row, updates={"api_key": SECOND}
    )

    after = stored(provider)
    assert after.base_url == NEW_HOST
    assert crypto.decrypt_credentials(after.credentials_encrypted) == {"api_key": SECOND}


def test_moving_a_provider_while_forgetting_its_credentials_is_saved(provider: Provider) -> None:
    row = with_key(provider)
    row.base_url = NEW_HOST

    providers.save_provider(actor=factories.TEST_ACTOR, provider=row, remove=["api_key"])

    assert (stored(provider).base_url, stored(provider).credentials_encrypted) == (NEW_HOST, "")


def test_every_stored_credential_must_be_entered_again_not_just_one(provider: Provider) -> None:
    providers.set_credentials(
        actor=factories.TEST_ACTOR,
        provider=provider,
        credentials={"api_key": FIRST, "auth_token": SECOND},
    )
    row = stored(provider)
    row.base_url = NEW_HOST

    with pytest.raises(ValidationError):
        providers.save_provider(
            actor=factories.TEST_ACTOR, provider=row, updates={"api_key": "a-new-key-0123456789"}
        )


def test_a_provider_without_credentials_moves_freely(provider: Provider) -> None:
    row = stored(provider)
    row.base_url = NEW_HOST

    assert providers.save_provider(actor=factories.TEST_ACTOR, provider=row)
    assert stored(provider).base_url == NEW_HOST


def test_a_trailing_slash_is_not_a_new_base_url(provider: Provider) -> None:
    row = with_key(provider)
    row.base_url = "https://api.anthropic.com/"

    providers.save_provider(actor=factories.TEST_ACTOR, provider=row)

    assert stored(provider).base_url == "https://api.anthropic.com/"


def test_the_admin_asks_for_the_credentials_when_the_base_url_changes(
    admin_client: Client, provider: Provider
) -> None:
    with_key(provider)
    url = f"/admin/governance/provider/{provider.pk}/change/"
    form = provider_form(name=provider.name, base_url=NEW_HOST)

    refused = admin_client.post(url, form)
    saved = admin_client.post(url, {**form, "api_key": SECOND})

    assert refused.status_code == 200
    assert "re-enter the credentials when changing the base URL" in refused.content.decode()
    assert saved.status_code == 302, saved.content.decode()[:2000]
    after = stored(provider)
    assert after.base_url == NEW_HOST
    assert crypto.decrypt_credentials(after.credentials_encrypted) == {"api_key": SECOND}


def test_apply_config_asks_for_the_credentials_when_the_base_url_changes(
    tmp_path: Path,
) -> None:
    applier.apply_file(config_file(tmp_path, base_url="https://api.anthropic.com"), env=KEY_ENV)
    moved = config_file(tmp_path, base_url=NEW_HOST)

    with pytest.raises(ConfigError) as refused:
        applier.apply_file(moved, env={})  # ${UPSTREAM_KEY:-} unset: the stored key is kept
    assert "re-enter the credentials when changing the base URL" in str(refused.value)
    assert Provider.objects.get(name="from-file").base_url == "https://api.anthropic.com"

    applier.apply_file(moved, env={"UPSTREAM_KEY": SECOND})
    after = Provider.objects.get(name="from-file")
    assert after.base_url == NEW_HOST
    assert crypto.decrypt_credentials(after.credentials_encrypted) == {"api_key": SECOND}


KEY_ENV = {"UPSTREAM_KEY": FIRST}


def config_file(tmp_path: Path, *, base_url: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n"
        "  - name: from-file\n"
        "    kind: anthropic\n"
        f"    base_url: {base_url}\n"
        "    api_key: ${UPSTREAM_KEY:-}\n"
    )
    return path


def provider_form(*, base_url: str, name: str = "admin-made") -> dict[str, str]:
    return {
        "name": name,
        "kind": "anthropic",
        "base_url": base_url,
        "region": "",
        "enabled": "on",
        "settings": "{}",
    }


def test_every_provider_kind_has_an_adapter_in_the_gateway():
    """A kind the admin and apply_config accept must be servable at request time."""
    import asyncio

    from proxy.runtime import Runtime

    async def kinds() -> set[str]:
        runtime = Runtime()
        try:
            return set(runtime.providers)
        finally:
            await runtime.close()

    assert {kind.value for kind in Provider.Kind} <= asyncio.run(kinds())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "fields", "field"),
    [("openai-compatible", {}, "base_url"), ("bedrock", {}, "region")],
)
def test_a_provider_missing_what_its_kind_needs_is_refused(kind, fields, field):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        Provider(name="p", kind=kind, **fields).full_clean()

    assert field in refused.value.message_dict
