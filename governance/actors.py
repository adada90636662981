"""Who is making a governance change; every service takes one as `actor=`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    label: str
    user_id: int | None = None

    @classmethod
    def of_user(cls, user: Any) -> Actor:
        return cls(label=f"user:{user.get_username()}", user_id=user.pk)

    @classmethod
    def system(cls, what: str = "system") -> Actor:
        return cls(label=what)

    @classmethod
    def config(cls, source: str) -> Actor:
        return cls(label=f"config:{source}")
