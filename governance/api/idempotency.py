"""`Idempotency-Key` on creates: a retried request gets the first answer, not a second object.

The same user sending the same key with the same method, path and body within 24 hours gets
the stored answer again (header `Idempotent-Replayed: true`); the same key with another
request is refused (422). Only successful answers are kept, so a request that failed
validation can be corrected and sent again with its key. A secret shown by the first answer
(a key's, an API token's) is never stored, so never replayed: the replay carries
`"secret": null` and `"secret_withheld": true`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from governance.api.errors import Unprocessable
from governance.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
WINDOW = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=JSONEncoder))


def _fingerprint(request: Request) -> str:
    body = json.dumps(_json(request.data), sort_keys=True, separators=(",", ":"))
    text = f"{request.method} {request.path}\n{body}"
    return hashlib.sha256(text.encode()).hexdigest()


def _key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise exceptions.ValidationError({HEADER: [f"1 to {MAX_KEY_LENGTH} characters"]})
    return key


def _user_id(request: Request) -> int:
    pk = request.user.pk
    if pk is None:  # the permission classes let no anonymous request this far
        raise exceptions.NotAuthenticated()
    return int(pk)


def _without_secret(data: Any) -> Any:
    if isinstance(data, dict) and "secret" in data:
        return {**data, "secret": None, "secret_withheld": True}
    return data


def _replay(request: Request, key: str, fingerprint: str) -> Response | None:
    mine = IdempotencyRecord.objects.filter(user_id=_user_id(request), key=key)
    mine.filter(created_at__lt=timezone.now() - WINDOW).delete()
    record = mine.first()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise Unprocessable(f"this {HEADER} was sent with another request: use a new key")
    return Response(record.response, status=record.status_code, headers={REPLAYED_HEADER: "true"})


def _remember(request: Request, key: str, fingerprint: str, response: Response) -> None:
    now = timezone.now()
    IdempotencyRecord.objects.filter(created_at__lt=now - WINDOW).delete()
    IdempotencyRecord.objects.create(
        user_id=_user_id(request),
        key=key,
        request_hash=fingerprint,
        status_code=response.status_code,
        response=_without_secret(_json(response.data)),
        created_at=now,
    )


def create_once(request: Request, create: Callable[[], Response]) -> Response:
    """Run `create` unless this request was answered before under its Idempotency-Key."""
    key = _key(request)
    if key is None:
        return create()
    fingerprint = _fingerprint(request)
    try:
        with transaction.atomic():
            replayed = _replay(request, key, fingerprint)
            if replayed is not None:
                return replayed
            response = create()
            if status.is_success(response.status_code):
                _remember(request, key, fingerprint, response)
            return response
    except IntegrityError:
        # A concurrent request with the same key committed first: answer as it did.
        replayed = _replay(request, key, fingerprint)
        if replayed is None:
            raise
        return replayed
