"""Claude subscription mode: Claude Code signed in with a Claude Max / Team / Enterprise plan.

Such a client sends its OAuth token (`Authorization: Bearer sk-ant-oat…`, with the
`oauth-2025-04-20` beta) instead of an API key, and names its developer with a virtual key in a
custom header (`ANTHROPIC_CUSTOM_HEADERS="x-gateway-key: <virtual key>"`). The gateway applies
the key's model policy, rate limits and attribution, forwards the token to Anthropic untouched
(never to another provider, never logged) and records the usage at list price, marked as
covered by the subscription. The organization decides (Organization.subscription_traffic):
refuse such traffic, serve it for showback only (outside budgets), or count it against budgets.
"""

from __future__ import annotations

from governance.policy import KeyPolicy, RouteTarget
from proxy.errors import GatewayError

GATEWAY_KEY_HEADER = "x-gateway-key"
OAUTH_TOKEN_PREFIX = "sk-ant-oat"  # noqa: S105 (a format marker, not a secret)
# Only Anthropic's own API takes a subscription token.
SUBSCRIPTION_KINDS = frozenset({"anthropic"})


def subscription_token(headers: dict[str, str]) -> str:
    """The client's Claude subscription token, or "" when it authenticates otherwise."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() != "bearer ":
        return ""
    token = authorization[7:].strip()
    return token if token.startswith(OAUTH_TOKEN_PREFIX) else ""


def missing_gateway_key() -> GatewayError:
    return GatewayError(
        401,
        "authentication_error",
        "This request is signed in with a Claude subscription but names no virtual key: set "
        f'ANTHROPIC_CUSTOM_HEADERS="{GATEWAY_KEY_HEADER}: <your virtual key>".',
    )


def check_allowed(policy: KeyPolicy) -> None:
    if policy.subscription_traffic == "refuse":
        raise GatewayError(
            403,
            "permission_error",
            f'Organization "{policy.organization_name}" does not accept Claude subscription '
            "sign-ins through the gateway: sign out of Claude Code (/logout) and use your "
            "virtual key as ANTHROPIC_API_KEY.",
        )


def counts_against_budgets(policy: KeyPolicy) -> bool:
    return policy.subscription_traffic == "budgeted"


def anthropic_only(model: str, order: tuple[RouteTarget, ...]) -> tuple[RouteTarget, ...]:
    """The deployments a subscription token may go to: Anthropic's API only."""
    kept = tuple(t for t in order if t.provider.kind in SUBSCRIPTION_KINDS)
    if not kept:
        raise GatewayError(
            403,
            "permission_error",
            f'Model "{model}" has no Anthropic deployment on this gateway, and a Claude '
            "subscription can only be used with Anthropic's API.",
        )
    return kept
