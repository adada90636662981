"""ETag on reads, If-Match on writes: optimistic concurrency for scripts that read-modify-write.

The ETag is a hash of the object's JSON representation, so any change a client could see
changes it. If-Match is optional (a client that sends none gets last-write-wins, as in the
admin); when sent, a stale value is refused with 412 before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rest_framework.request import Request

from governance.api.errors import PreconditionFailed


def etag_of(representation: Any) -> str:
    body = json.dumps(representation, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'


def check_if_match(request: Request, current: str) -> None:
    """Raise 412 unless If-Match is absent, `*`, or lists the current ETag (strong comparison:
    a weak `W/` tag never matches, RFC 9110 13.1.1)."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    tags = {tag.strip() for tag in header.split(",")}
    if "*" in tags or current in tags:
        return
    raise PreconditionFailed()
