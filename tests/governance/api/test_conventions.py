"""What every resource shares: ETag / If-Match, Idempotency-Key, cursor pagination,
filtering and ordering, error answers."""

from __future__ import annotations

import pytest

from governance.models import AuditEvent, Team, VirtualKey
from tests import factories
from tests.governance.api.conftest import Api
from tests.roles import World

pytestmark = pytest.mark.django_db


# --- ETag / If-Match ------------------------------------------------------------------------


def test_a_stale_if_match_is_refused_with_412_and_nothing_changes(
    acme_admin: Api, world: World
) -> None:
    url = f"/api/v1/teams/{world.backend.pk}/"
    etag = acme_admin.get(url).headers["ETag"]
    acme_admin.patch(url, {"description": "changed by someone else"})

    stale = acme_admin.patch(url, {"description": "mine"}, **{"If-Match": etag})
    deleted = acme_admin.delete(url, **{"If-Match": etag})

    assert stale.status_code == 412 and deleted.status_code == 412
    assert Team.objects.get(pk=world.backend.pk).description == "changed by someone else"


def test_a_current_if_match_lets_the_change_through_and_returns_the_new_etag(
    acme_admin: Api, world: World
) -> None:
    url = f"/api/v1/teams/{world.backend.pk}/"
    etag = acme_admin.get(url).headers["ETag"]

    changed = acme_admin.patch(url, {"description": "mine"}, **{"If-Match": etag})

    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.headers["ETag"] == acme_admin.get(url).headers["ETag"]
    assert acme_admin.patch(url, {"description": "any"}, **{"If-Match": "*"}).status_code == 200


def test_without_if_match_the_last_write_wins(acme_admin: Api, world: World) -> None:
    url = f"/api/v1/teams/{world.backend.pk}/"

    assert acme_admin.patch(url, {"description": "a"}).status_code == 200
    assert acme_admin.put(url, {"name": "backend", "description": "b"}).status_code == 200


def test_a_weak_etag_never_matches(acme_admin: Api, world: World) -> None:
    url = f"/api/v1/teams/{world.backend.pk}/"
    etag = acme_admin.get(url).headers["ETag"]

    response = acme_admin.patch(url, {"description": "x"}, **{"If-Match": f"W/{etag}"})

    assert response.status_code == 412


# --- Idempotency-Key ------------------------------------------------------------------------


def test_a_retried_create_returns_the_first_object_without_its_secret(
    acme_admin: Api, world: World
) -> None:
    body = {"team": world.backend.pk, "name": "onboarding-bot"}
    headers = {"Idempotency-Key": "onboard-42"}

    first = acme_admin.post("/api/v1/keys/", body, **headers)
    again = acme_admin.post("/api/v1/keys/", body, **headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["secret"] and first.json()["secret_withheld"] is False
    assert again.json()["secret"] is None and again.json()["secret_withheld"] is True
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["secret"] not in again.content.decode()
    assert VirtualKey.objects.filter(name="onboarding-bot").count() == 1
    assert (
        AuditEvent.objects.filter(verb="key_created", subject_id=str(first.json()["id"])).count()
        == 1
    )


def test_an_idempotency_key_reused_for_another_request_is_refused(
    acme_admin: Api, world: World
) -> None:
    acme_admin.post(
        "/api/v1/teams/", {"organization": world.acme.pk, "name": "a"}, **{"Idempotency-Key": "k"}
    )

    other = acme_admin.post(
        "/api/v1/teams/", {"organization": world.acme.pk, "name": "b"}, **{"Idempotency-Key": "k"}
    )

    assert other.status_code == 422
    assert not Team.objects.filter(name="b").exists()


def test_a_failed_create_can_be_retried_with_the_same_key(acme_admin: Api, world: World) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    invalid = acme_admin.post("/api/v1/teams/", {"organization": world.acme.pk}, **headers)
    fixed = acme_admin.post(
        "/api/v1/teams/", {"organization": world.acme.pk, "name": "fixed"}, **headers
    )

    assert invalid.status_code == 400 and fixed.status_code == 201


def test_idempotency_keys_belong_to_their_user(as_role, world: World) -> None:
    one, other = as_role(superuser=True), as_role(superuser=True)
    body = {"organization": world.acme.pk, "name": "shared"}

    assert one.post("/api/v1/teams/", body, **{"Idempotency-Key": "same"}).status_code == 201
    second = other.post("/api/v1/teams/", body, **{"Idempotency-Key": "same"})

    assert second.status_code == 400  # a fresh create: the name is taken, nothing replayed
    assert "Idempotent-Replayed" not in second.headers


# --- pagination, filtering, ordering --------------------------------------------------------


def test_cursor_pagination_walks_every_row_once(root: Api, world: World) -> None:
    for index in range(7):
        factories.team(organization=world.globex, name=f"t{index}")
    seen: list[int] = []
    url, params = "/api/v1/teams/", {"page_size": 3, "organization": world.globex.pk}

    page = root.get(url, params).json()
    seen += [row["id"] for row in page["results"]]
    while page["next"]:
        assert len(page["results"]) == 3
        page = root.get(page["next"]).json()
        seen += [row["id"] for row in page["results"]]

    expected = list(
        Team.objects.filter(organization=world.globex).order_by("id").values_list("pk", flat=True)
    )
    assert seen == expected
    assert "count" not in page


def test_ordering_and_filters(root: Api, world: World) -> None:
    names = [
        row["name"] for row in root.get("/api/v1/teams/", {"ordering": "-name"}).json()["results"]
    ]
    revoked = factories.virtual_key(team=world.ml, name="old")
    root.post(f"/api/v1/keys/{revoked.pk}/revoke/")

    assert names == sorted(names, reverse=True)
    only_revoked = root.get("/api/v1/keys/", {"revoked": "true"}).json()["results"]
    assert [row["id"] for row in only_revoked] == [revoked.pk]
    of_team = root.get("/api/v1/keys/", {"team": world.ml.pk, "revoked": "false"}).json()
    assert [row["id"] for row in of_team["results"]] == [world.ml_key.pk]


def test_a_malformed_filter_is_a_400(root: Api) -> None:
    response = root.get("/api/v1/keys/", {"organization": "not-a-number"})

    assert response.status_code == 400 and "organization" in response.json()


def test_an_invalid_cursor_is_a_404(root: Api) -> None:
    assert root.get("/api/v1/keys/", {"cursor": "garbage"}).status_code == 404


# --- errors ---------------------------------------------------------------------------------


def test_deleting_what_is_still_used_is_a_409(root: Api, world: World) -> None:
    response = root.delete(f"/api/v1/organizations/{world.acme.pk}/")

    assert response.status_code == 409
    assert "in use" in response.json()["detail"]


def test_unknown_api_urls_answer_json(root: Api) -> None:
    response = root.get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_text_a_database_cannot_store_is_a_400(root: Api, world: World) -> None:
    nul = root.post(
        "/api/v1/teams/", {"organization": world.acme.pk, "name": "a", "description": "x\u0000y"}
    )
    surrogate = root.client.post(
        "/api/v1/teams/",
        f'{{"organization": {world.acme.pk}, "name": "b", "description": "\\ud800"}}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {root.secret}"},
    )

    assert nul.status_code == 400 and surrogate.status_code == 400
    assert not Team.objects.filter(name__in=["a", "b"]).exists()


def test_only_json_bodies_are_accepted(root: Api, world: World) -> None:
    response = root.client.post(
        "/api/v1/teams/",
        {"organization": world.acme.pk, "name": "form"},
        headers={"Authorization": f"Bearer {root.secret}"},
    )

    assert response.status_code == 415


def test_date_time_filters_take_any_iso_offset(root: Api, world: World) -> None:
    # PostgreSQL refuses offsets beyond ±15:59 in a query; ISO 8601 allows up to ±23:59.
    far_east = root.get("/api/v1/audit-events/", {"created_after": "2026-01-01T00:00:00+23:20"})
    # 9999-12-31 23:00 at -10:00 is already year 10000 in UTC.
    beyond = root.get("/api/v1/audit-events/", {"created_before": "9999-12-31T23:00:00-10:00"})

    assert far_east.status_code == 200
    assert beyond.status_code == 400 and "created_before" in beyond.json()
