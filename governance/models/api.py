"""State of the REST API itself (governance/api/)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """The first answer to a create sent with an `Idempotency-Key` header, replayed when the
    same user sends the same key with the same request again (for 24 hours).

    `request_hash` fingerprints the method, path and body, so a key reused for another request
    is refused rather than answered with an unrelated object. `response` never holds a secret:
    a replay of a key or token creation returns the object without its secret.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} of user {self.user_id}"
