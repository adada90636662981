from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.http import Http404
from django.test import RequestFactory

from gatewaysite import static_serving


@pytest.fixture
def static_root(settings: Any, tmp_path: Path) -> Path:
    settings.STATIC_ROOT = tmp_path
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "base.css").write_text("body { color: black; }")
    return tmp_path


def test_a_static_file_is_served_whole_with_its_type(static_root: Path) -> None:
    response = static_serving.serve(
        RequestFactory().get("/static/admin/base.css"), "admin/base.css"
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/css"
    assert response["Last-Modified"]
    assert not response.streaming
    assert response.content == b"body { color: black; }"


def test_an_unchanged_static_file_answers_not_modified(static_root: Path) -> None:
    first = static_serving.serve(RequestFactory().get("/"), "admin/base.css")
    request = RequestFactory().get("/", headers={"if-modified-since": first["Last-Modified"]})

    assert static_serving.serve(request, "admin/base.css").status_code == 304


def test_a_missing_static_file_is_not_found(static_root: Path) -> None:
    with pytest.raises(Http404):
        static_serving.serve(RequestFactory().get("/"), "admin/missing.css")


def test_a_path_outside_the_static_root_is_not_found(static_root: Path) -> None:
    (static_root.parent / "secret.txt").write_text("not static")

    with pytest.raises(Http404):
        static_serving.serve(RequestFactory().get("/"), "../secret.txt")
