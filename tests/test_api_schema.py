"""The OpenAPI schema maps the whole admin API: staff only, whatever DEBUG says."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


def test_anonymous_requests_get_no_schema(client: Client) -> None:
    response = client.get("/api/schema/")

    assert response.status_code in (401, 403)
    assert b"openapi" not in response.content


def test_a_signed_in_user_who_is_not_staff_gets_no_schema(
    client: Client, django_user_model: type[User]
) -> None:
    user = django_user_model.objects.create_user("viewer", password="not-a-real-password-1")
    client.force_login(user)

    assert client.get("/api/schema/").status_code == 403


def test_staff_read_the_schema(admin_client: Client) -> None:
    response = admin_client.get("/api/schema/")

    assert response.status_code == 200
    assert b"openapi" in response.content
