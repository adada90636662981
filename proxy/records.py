"""The ledger row of a request: its id, its attribution, and the row of a refusal.

Every answer carries the request id made on arrival (`x-gateway-request-id` and the error
body), and every request to a governed route that is refused or reaches an upstream leaves one
ledger row under that id: the id a developer quotes finds the row. Successful count_tokens
calls and model listings cost nothing and leave no row; throttled authentication failures
leave none either, so a flood of bad keys cannot fill the ledger.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from typing import Any

import orjson

from governance.policy import KeyPolicy
from proxy.asgi import ClientGone, Incoming
from proxy.attribution import attribute
from proxy.errors import GatewayError
from proxy.forwarding import Outcome as RelayOutcome
from proxy.runtime import Runtime
from telemetry import observe

logger = logging.getLogger("gateway.proxy")


def new_request_id() -> str:
    """32 hex digits like a uuid4: 48 bits of Unix milliseconds, then 80 random bits.

    Time first, so new ids land at the right edge of the ledger's unique index instead of on
    a random page of it: on a ten-million-row ledger random ids made every insert read a cold
    index page. `random` rather than uuid4 saves a getrandom() syscall per request; an id
    must be unique, not unguessable, and `random` is reseeded in every forked worker.
    """
    return f"gwreq_{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def new_event(request: Incoming, route: str) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "created_at": dt.datetime.now(dt.UTC),
        "route": route,
        "stream": False,
    }


def attribute_key(event: dict[str, Any], policy: KeyPolicy) -> None:
    event.update(
        organization_id=policy.organization_id,
        team_id=policy.team_id,
        project_id=policy.project_id,
        key_id=policy.key_id,
        parent_key_id=policy.parent_id,
        key_name=policy.key_name,
    )


def attribute_request(
    event: dict[str, Any], headers: dict[str, str], parsed: dict[str, Any] | None
) -> None:
    attribution = attribute(headers, parsed.get("metadata") if parsed else None)
    event.update(
        session_id=attribution.session_id,
        agent_id=attribution.agent_id,
        parent_agent_id=attribution.parent_agent_id,
        client_name=attribution.client_name,
        client_version=attribution.client_version,
        # For the OpenTelemetry span only; the ledger writer keeps just its own columns.
        traceparent=attribution.traceparent,
    )
    if parsed is not None:
        event["requested_model"] = parsed["model"]
        event["stream"] = parsed.get("stream") is True


def as_refusal(failure: BaseException, request_id: str) -> GatewayError | ClientGone:
    """A failure before forwarding, as the refusal the client gets and the ledger records.

    Anything but the gateway's own refusals (a routing table or price book that cannot be
    loaded while the database is down, a bug) becomes a 503 the client may retry.
    """
    if isinstance(failure, GatewayError | ClientGone):
        return failure
    logger.error("request %s failed before forwarding", request_id, exc_info=failure)
    return GatewayError(
        503,
        "api_error",
        "The gateway could not prepare this request (a dependency is unavailable). Retry shortly.",
        headers=[(b"retry-after", b"5")],
    )


def record_refusal(
    runtime: Runtime,
    event: dict[str, Any],
    refusal: GatewayError | ClientGone,
    policy: KeyPolicy | None,
    *,
    started: float,
) -> None:
    """The ledger row (and metrics) of a request the gateway answered itself."""
    if isinstance(refusal, ClientGone):
        event.update(status=499, error_type="", client_disconnected=True)
    else:
        if not refusal.recorded:
            return
        event.update(
            status=refusal.status, error_type=refusal.error_type, error_message=refusal.message
        )
    event["latency_ms"] = int((time.perf_counter() - started) * 1000)
    runtime.usage.put(event)
    if policy is not None:
        observe.request_finished(event, policy, started=started)


def attempt_log(outcome: RelayOutcome) -> str:
    """The attempts as JSON for the ledger, when there is more to tell than the row says."""
    attempts = outcome.attempt_log
    if not attempts or (len(attempts) == 1 and attempts[0].status == 200):
        return ""
    return orjson.dumps([attempt.as_dict() for attempt in attempts]).decode()
