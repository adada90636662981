"""The sign-in endpoints are limited per client address (governance/signin/ratelimit.py)."""

from __future__ import annotations

import re

import httpx
import pytest

from governance.signin import ratelimit
from tests.clock import within_one_window
from tests.governance.signin.conftest import SignIn

pytestmark = pytest.mark.django_db(transaction=True)


def test_device_authorizations_past_the_limit_are_told_to_slow_down(signin: SignIn):
    limit = ratelimit.DEVICE_AUTHORIZATION
    within_one_window(limit.window_seconds)

    answers = [
        signin.post("/oauth/device_authorization", surface="claude_code").status_code
        for _ in range(limit.max_requests + 1)
    ]

    assert answers == [200] * limit.max_requests + [429]
    refused = signin.post("/oauth/device_authorization", surface="claude_code")
    assert refused.json()["error"] == "slow_down"
    assert 0 < int(refused.headers["retry-after"]) <= limit.window_seconds


def test_user_code_submissions_past_the_limit_are_refused(signin: SignIn):
    client = httpx.Client(timeout=10)
    page = client.get(signin.base + "/device")
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match is not None

    def submit() -> int:
        form = {"csrfmiddlewaretoken": match.group(1), "user_code": "BCDF-GHJK"}
        return client.post(signin.base + "/device", data=form).status_code

    within_one_window(ratelimit.USER_CODE.window_seconds)
    answers = [submit() for _ in range(ratelimit.USER_CODE.max_requests + 1)]

    assert answers == [400] * ratelimit.USER_CODE.max_requests + [429]


def test_the_limit_counts_each_address_on_its_own(settings):
    limit = ratelimit.Limit("test", 2, 600)
    within_one_window(limit.window_seconds)

    first = [ratelimit.exceeded(limit, "10.0.0.1") for _ in range(3)]
    other = ratelimit.exceeded(limit, "10.0.0.2")
    same_slash_64 = [ratelimit.exceeded(limit, f"2001:db8::{n}") for n in range(3)]

    assert first == [False, False, True]
    assert other is False
    assert same_slash_64 == [False, False, True]
