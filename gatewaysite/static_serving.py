"""Static files served by Django itself when GATEWAY_SERVE_STATIC is on (`make run`, docker)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.http import http_date
from django.views.static import was_modified_since


def serve(request: HttpRequest, path: str) -> HttpResponse:
    """Serve a file of STATIC_ROOT, read whole.

    Not django.views.static.serve: its FileResponse streams through a sync iterator, which the
    ASGI handler warns about and reads with a thread hop per chunk. The admin's assets are
    small, so reading each one whole is simpler and quieter.
    """
    root = Path(settings.STATIC_ROOT).resolve()
    fullpath = (root / path).resolve()
    if not fullpath.is_relative_to(root) or not fullpath.is_file():
        raise Http404(f"{path} is not a static file")
    mtime = fullpath.stat().st_mtime
    if not was_modified_since(request.headers.get("If-Modified-Since"), int(mtime)):
        return HttpResponseNotModified()
    content_type, encoding = mimetypes.guess_type(fullpath.name)
    response = HttpResponse(
        fullpath.read_bytes(), content_type=content_type or "application/octet-stream"
    )
    response.headers["Last-Modified"] = http_date(mtime)
    if encoding:
        response.headers["Content-Encoding"] = encoding
    return response
