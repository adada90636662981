"""Keys over the API: the secret in the create (and rotate) answer only; rotate with grace;
revoke with sub-keys."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from governance.keyhash import hash_secret
from governance.models import AuditEvent, VirtualKey
from tests.governance.api.conftest import Api
from tests.roles import World

pytestmark = pytest.mark.django_db


def test_create_returns_the_secret_once_and_reads_never_do(acme_admin: Api, world: World) -> None:
    created = acme_admin.post("/api/v1/keys/", {"team": world.backend.pk, "name": "ci"})

    assert created.status_code == 201
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("sk-gw-") and body["secret_withheld"] is False
    assert created.headers["Cache-Control"] == "no-store"
    key = VirtualKey.objects.get(pk=body["id"])
    assert key.lookup_hash == hash_secret(secret) and key.organization == world.acme
    detail = acme_admin.get(f"/api/v1/keys/{body['id']}/")
    listing = acme_admin.get("/api/v1/keys/")
    for response in (detail, listing):
        assert secret not in response.content.decode()
        assert key.lookup_hash not in response.content.decode()
    assert "secret" not in detail.json()
    assert AuditEvent.objects.filter(verb="key_created", subject_id=str(key.pk)).exists()


def test_a_sub_key_takes_its_parent_s_team(acme_admin: Api, world: World) -> None:
    created = acme_admin.post("/api/v1/keys/", {"parent": world.backend_key.pk, "name": "bot"})

    assert created.status_code == 201
    assert created.json()["team"] == world.backend.pk
    assert created.json()["parent"] == world.backend_key.pk
    listed = acme_admin.get("/api/v1/keys/", {"parent": world.backend_key.pk}).json()["results"]
    assert [row["name"] for row in listed] == ["bot"]


def test_a_key_needs_somewhere_to_live(acme_admin: Api) -> None:
    response = acme_admin.post("/api/v1/keys/", {"name": "orphan"})

    assert response.status_code == 400
    assert "organization" in response.json()


def test_rotate_keeps_the_old_secret_for_the_grace_period(acme_admin: Api, world: World) -> None:
    old_hash = world.backend_key.lookup_hash

    rotated = acme_admin.post(
        f"/api/v1/keys/{world.backend_key.pk}/rotate/", {"grace_seconds": 3600}
    )

    assert rotated.status_code == 200
    secret = rotated.json()["secret"]
    assert rotated.headers["Cache-Control"] == "no-store"
    key = VirtualKey.objects.get(pk=world.backend_key.pk)
    assert key.lookup_hash == hash_secret(secret)
    assert key.previous_lookup_hash == old_hash
    assert key.previous_valid_until is not None
    assert key.previous_valid_until > timezone.now() + dt.timedelta(minutes=59)
    assert rotated.json()["previous_valid_until"] is not None
    assert AuditEvent.objects.filter(verb="key_rotated", subject_id=str(key.pk)).exists()


def test_rotate_without_grace_drops_the_old_secret(acme_admin: Api, world: World) -> None:
    rotated = acme_admin.post(f"/api/v1/keys/{world.backend_key.pk}/rotate/")

    assert rotated.status_code == 200
    assert VirtualKey.objects.get(pk=world.backend_key.pk).previous_lookup_hash is None


def test_revoke_switches_off_the_key_and_its_sub_keys(acme_admin: Api, world: World) -> None:
    sub = acme_admin.post("/api/v1/keys/", {"parent": world.backend_key.pk, "name": "bot"})

    revoked = acme_admin.post(
        f"/api/v1/keys/{world.backend_key.pk}/revoke/", {"reason": "laptop lost"}
    )

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None and revoked.json()["is_active"] is False
    assert VirtualKey.objects.get(pk=sub.json()["id"]).revoked_at is not None
    assert acme_admin.get("/api/v1/keys/", {"revoked": "false"}).json()["results"] == [
        row for row in acme_admin.get("/api/v1/keys/").json()["results"] if row["is_active"]
    ]
    event = AuditEvent.objects.filter(verb="key_revoked", subject_id=str(world.backend_key.pk))
    assert event.get().note == "laptop lost"


def test_a_revoked_key_cannot_be_rotated(acme_admin: Api, world: World) -> None:
    acme_admin.post(f"/api/v1/keys/{world.backend_key.pk}/revoke/")

    response = acme_admin.post(f"/api/v1/keys/{world.backend_key.pk}/rotate/")

    assert response.status_code == 400


def test_keys_are_revoked_not_deleted(acme_admin: Api, world: World) -> None:
    assert acme_admin.delete(f"/api/v1/keys/{world.backend_key.pk}/").status_code == 405


def test_a_key_stays_in_its_team(acme_admin: Api, world: World) -> None:
    response = acme_admin.patch(
        f"/api/v1/keys/{world.backend_key.pk}/", {"team": world.ml.pk, "owner": "ana@acme.test"}
    )

    assert response.status_code == 200
    assert response.json()["team"] == world.backend.pk  # not an updatable field
    assert response.json()["owner"] == "ana@acme.test"
