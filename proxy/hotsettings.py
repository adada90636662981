"""Settings the proxy reads on every request, as plain attributes of `hot`.

`django.conf.settings` is a lazy object: each read goes through its `__getattr__`, about half a
microsecond, several times per request. These are copied once and copied again whenever a
setting changes at run time (`setting_changed`: tests' `settings` fixture and
`override_settings` send it).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed


class HotSettings:
    __slots__ = (
        "max_body_bytes",
        "reservation_ttl_seconds",
        "reserve_output_tokens",
        "signin_path",
        "strict_budgets",
    )

    def __init__(self) -> None:
        self.load()

    def load(self) -> None:
        self.max_body_bytes: int = settings.GATEWAY_MAX_BODY_BYTES
        self.reservation_ttl_seconds: int = settings.GATEWAY_RESERVATION_TTL_SECONDS
        self.reserve_output_tokens: int = settings.GATEWAY_RESERVE_OUTPUT_TOKENS
        self.signin_path: str = settings.GATEWAY_SIGNIN_PATH
        self.strict_budgets: bool = settings.GATEWAY_STRICT_BUDGETS


hot = HotSettings()


def _reload(**_: Any) -> None:
    hot.load()


setting_changed.connect(_reload, dispatch_uid="proxy.hotsettings")
