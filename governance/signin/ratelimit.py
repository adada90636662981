"""Per-address limits of the sign-in endpoints, counted in the shared cache (Redis when set,
so every replica counts together): a fixed window per address and endpoint, whose counter
expires with the window, so the cache holds at most one small entry per address and endpoint.

An IPv6 client is counted by its /64 (one host can own a whole /64). The defaults follow
Anthropic's gateway (CLAUDE-GATEWAY.md §2 `rate_limits`): 30 device authorizations and 10
user-code submissions per address per 10 minutes. A cache that fails is not a reason to stop
people signing in: the limit is then not applied (and the failure logged).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

from django.core.cache import cache

logger = logging.getLogger(__name__)
PREFIX = "signin:rl"


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    max_requests: int
    window_seconds: int


DEVICE_AUTHORIZATION = Limit("device_authorization", 30, 600)
USER_CODE = Limit("user_code", 10, 600)
# Polls come every 5 s per sign-in and refreshes every few minutes per developer: generous, for
# an office behind one address.
TOKEN = Limit("token", 600, 600)
REVOKE = Limit("revoke", 120, 600)


def client_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return str(ip)


def exceeded(limit: Limit, address: str) -> bool:
    """Count one request of `address` against `limit`; whether it is over the limit."""
    window = int(time.time()) // limit.window_seconds
    key = f"{PREFIX}:{limit.name}:{client_key(address)}:{window}"
    try:
        cache.add(key, 0, timeout=limit.window_seconds + 5)
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr: start the window again
        cache.set(key, 1, timeout=limit.window_seconds + 5)
        count = 1
    except Exception:
        logger.warning("sign-in rate limit not applied: the cache is unavailable", exc_info=True)
        return False
    return int(count) > limit.max_requests


def retry_after(limit: Limit) -> int:
    """Seconds until the current window of `limit` ends."""
    return limit.window_seconds - int(time.time()) % limit.window_seconds
