"""Requests in flight together take turns (proxy/messages.py `take_turns`), through a real
gateway: from TAKE_TURNS_FROM requests in flight on, each is admitted before any of them is
forwarded (below it each goes on at once), the worker's count of requests in flight always
comes back to zero, and a request stopped while it waits for its turn still gets its ledger row
with what really happened to it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from proxy import budgeting, forwarding, messages
from telemetry.models import UsageRecord
from tests.proxy.conftest import GatewayServer, Governed, wait_for
from tests.proxy.test_hardening_e2e import post, row_of

pytestmark = pytest.mark.django_db(transaction=True)


def two_requests_at_once(
    gateway: GatewayServer, governed: Governed, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Two requests admitted in the same loop turn; the order in which the gateway admitted
    and forwarded them."""
    stages: list[str] = []
    arrived: list[str] = []
    together = asyncio.Event()  # bound to the gateway's loop when first awaited there

    async def admit(*args: Any, **kwargs: Any) -> Any:
        # Both requests go on from their admission in the same loop turn, as requests that
        # arrived together would (whatever the counter store: in memory or Redis).
        admitted = await budgeting.admit_request(*args, **kwargs)
        arrived.append(kwargs["request_id"])
        if len(arrived) == 2:
            together.set()
        else:  # not for ever if the other one never comes
            asyncio.get_running_loop().call_later(5, together.set)
        await together.wait()  # no wait_for: on 3.11 it would add a task, and loop turns
        stages.append("admitted")
        return admitted

    def forward(**kwargs: Any) -> Any:
        stages.append("forwarded")
        return forwarding.forward(**kwargs)

    monkeypatch.setattr(messages, "admit_request", admit)
    monkeypatch.setattr(messages, "forward", forward)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: post(gateway, governed.secret), range(2)))

    assert [answer.status_code for answer in answers] == [200, 200]
    assert {row_of(answer).status for answer in answers} == {200}
    return stages


@pytest.mark.parametrize(
    ("take_turns_from", "expected"),
    [
        # Enough requests in flight: both are admitted before either is forwarded.
        (2, ["admitted", "admitted", "forwarded", "forwarded"]),
        # Fewer than the threshold: each goes on at once.
        (3, ["admitted", "forwarded", "admitted", "forwarded"]),
    ],
)
def test_requests_in_flight_take_turns_from_the_threshold_on(
    gateway: GatewayServer,
    governed: Governed,
    monkeypatch: pytest.MonkeyPatch,
    take_turns_from: int,
    expected: list[str],
) -> None:
    monkeypatch.setattr(messages, "TAKE_TURNS_FROM", take_turns_from)

    stages = two_requests_at_once(gateway, governed, monkeypatch)

    assert stages == expected


def test_the_count_of_requests_in_flight_comes_back_to_zero(
    gateway: GatewayServer, governed: Governed
) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(
                lambda call: call(),
                [
                    lambda: post(gateway, governed.secret),
                    lambda: post(gateway, governed.secret),
                    lambda: post(gateway, "sk-gw-not-a-key-of-this-gateway"),
                    lambda: post(gateway, governed.secret, path="/v1/no-such-route"),
                ],
            )
        )

    assert sorted(answer.status_code for answer in answers) == [200, 200, 401, 404]
    wait_for(lambda: gateway.runtime.requests_in_flight == 0)


class StopAtTurn:
    """take_turns that stops the request (as the server's shutdown would) at turn `stop_at`:
    1 before forwarding, 2 after the answer was sent, before the bookkeeping."""

    def __init__(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self.turns = 0

    async def __call__(self, runtime: Any) -> None:
        self.turns += 1
        if self.turns == self.stop_at:
            raise asyncio.CancelledError


def test_a_request_stopped_after_its_answer_keeps_a_ledger_row_as_answered(
    gateway: GatewayServer, governed: Governed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "take_turns", StopAtTurn(2))

    answer = post(gateway, governed.secret)

    assert answer.status_code == 200
    assert answer.json()["type"] == "message"
    row = row_of(answer)
    assert (row.status, row.error_type, row.error_message) == (200, "", "")
    assert row.output_tokens > 0 and row.cost_micros > 0


def test_a_request_stopped_before_it_is_forwarded_keeps_a_ledger_row_as_cut_short(
    gateway: GatewayServer, governed: Governed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "take_turns", StopAtTurn(1))

    answer = post(gateway, governed.secret)

    assert answer.status_code == 500  # uvicorn's answer to an application that stopped early
    wait_for(UsageRecord.objects.exists)
    [row] = UsageRecord.objects.all()
    assert row.error_type == "api_error"
    assert row.error_message.startswith("cut short")
    assert (row.output_tokens, row.cost_micros) == (0, 0)
    wait_for(lambda: gateway.runtime.requests_in_flight == 0)
