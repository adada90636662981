"""What a user may see and change: one answer for the admin, the REST API, /logs and /dashboards/.

Roles (governance.models.Role) are held per organization through Membership, or for every
organization when the membership names none; superusers are platform admins everywhere.

- platform admin: everything in their organizations; the objects every organization shares
  (providers, routes, prices, MCP servers) only when admin everywhere.
- finance: budgets, spend, reports, alerts and alert channels of their organizations (prices
  when finance everywhere); keys, teams and the rest read-only; never provider credentials
  (nobody reads those: they are write-only everywhere).
- team lead: only their teams: the teams themselves, their keys and sub-keys, the budgets of
  those keys (the team's own budgets read-only), their requests and spend.
- auditor: everything of their organizations read-only; the audit log when auditor (or admin)
  everywhere, since its events are not tied to one organization.

Each model has a Rule naming the roles that may view and change it and where its organization
and team are found. Checks are object-level (`can`) as well as list filters (`visible`); a
caller that cannot view an object answers 404, not 403, so ids do not leak. Telemetry registers
rules for its own models (the ledger, alerts) from its AppConfig: governance imports nothing of
telemetry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db import models
from django.db.models import Q, QuerySet

from governance.models import (
    ApiToken,
    AuditEvent,
    Budget,
    Deployment,
    DeveloperKey,
    IdpGroupRole,
    MCPServer,
    MCPToolGrant,
    MCPToolPrice,
    Membership,
    ModelPolicy,
    ModelPrice,
    ModelRoute,
    OIDCIdentity,
    Organization,
    OrganizationSignIn,
    Project,
    Provider,
    RateLimit,
    Role,
    SignInSession,
    Team,
    TeamIdpGroup,
    TeamSignIn,
    VirtualKey,
)

Action = Literal["view", "change"]
M = TypeVar("M", bound=models.Model)
ALL_ROLES = frozenset(Role)
ADMIN = frozenset({Role.PLATFORM_ADMIN})


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may view and change one model's rows, and where a row's organization and team are.

    `org_paths` are lookups from the row to an organization id (several when the row hangs
    off either a team or a key); None marks a model every organization shares, which only
    roles held everywhere may change. `team_paths` / `team_change_paths` let team leads see /
    change rows of their teams. `everywhere_only` roles count only when held everywhere.
    `through` (column, model) is for rows that keep another model's id in a plain column
    (telemetry's tables hold ids, not foreign keys): they are seen and changed as the row that
    id names is, by the roles `view` / `change` list (none listed: nobody).
    """

    view: frozenset[Role]
    change: frozenset[Role]
    org_paths: tuple[str, ...] | None
    team_paths: tuple[str, ...] = ()
    team_change_paths: tuple[str, ...] = ()
    everywhere_only: frozenset[Role] = frozenset()
    through: tuple[str, type[models.Model]] | None = None


RULES: dict[type[models.Model], Rule] = {}


def register(model: type[models.Model], rule: Rule) -> None:
    RULES[model] = rule


def has_rule(model: type[models.Model]) -> bool:
    """Whether roles govern `model` (models without a rule, e.g. Django's own, are not)."""
    return any(klass in RULES for klass in model.__mro__)


_KEY_OR_TEAM_ORG = ("team__organization_id", "virtual_key__organization_id")
_KEY_OR_TEAM_TEAM = ("team_id", "virtual_key__team_id")

register(
    Organization,
    Rule(ALL_ROLES, ADMIN, ("id",), team_paths=("teams__id",)),
)
register(Team, Rule(ALL_ROLES, ADMIN, ("organization_id",), team_paths=("id",)))
register(Project, Rule(ALL_ROLES - {Role.TEAM_LEAD}, ADMIN, ("organization_id",)))
register(
    VirtualKey,
    Rule(
        ALL_ROLES,
        frozenset({Role.PLATFORM_ADMIN, Role.TEAM_LEAD}),
        ("organization_id",),
        team_paths=("team_id",),
        team_change_paths=("team_id",),
    ),
)
register(
    Budget,
    Rule(
        ALL_ROLES,
        frozenset({Role.PLATFORM_ADMIN, Role.FINANCE, Role.TEAM_LEAD}),
        ("organization_id",),
        team_paths=("team_id", "virtual_key__team_id"),
        team_change_paths=("virtual_key__team_id",),  # the team's own ceiling is not theirs
    ),
)
for _limit in (RateLimit, ModelPolicy):
    register(_limit, Rule(ALL_ROLES, ADMIN, _KEY_OR_TEAM_ORG, team_paths=_KEY_OR_TEAM_TEAM))
# An MCP grant belongs to an organization, a team, a project or a key (exactly one).
register(
    MCPToolGrant,
    Rule(
        ALL_ROLES,
        ADMIN,
        ("organization_id", "project__organization_id", *_KEY_OR_TEAM_ORG),
        team_paths=_KEY_OR_TEAM_TEAM,
    ),
)
for _shared in (Provider, ModelRoute, Deployment, MCPServer, MCPToolPrice):
    register(_shared, Rule(ALL_ROLES, ADMIN, None))
register(ModelPrice, Rule(ALL_ROLES, frozenset({Role.PLATFORM_ADMIN, Role.FINANCE}), None))
register(
    AuditEvent,
    Rule(
        frozenset({Role.PLATFORM_ADMIN, Role.AUDITOR}),
        frozenset(),
        None,
        everywhere_only=frozenset({Role.PLATFORM_ADMIN, Role.AUDITOR}),
    ),
)
for _people in (Membership, Group, get_user_model()):
    register(_people, Rule(ADMIN, ADMIN, None, everywhere_only=ADMIN))
# API tokens: each user manages their own; admins everywhere manage everyone's (Access.condition).
register(ApiToken, Rule(ADMIN, ADMIN, None, everywhere_only=ADMIN))
# Single sign-on: which IdP groups grant roles and teams, and who signed in as whom.
register(
    IdpGroupRole,
    Rule(frozenset({Role.PLATFORM_ADMIN, Role.AUDITOR}), ADMIN, ("organization_id",)),
)
register(TeamIdpGroup, Rule(ALL_ROLES, ADMIN, ("team__organization_id",), team_paths=("team_id",)))
register(OIDCIdentity, Rule(ADMIN, ADMIN, None, everywhere_only=ADMIN))
# Claude Code sign-in: a team's settings are the admins' (they can run commands on developers'
# machines); team leads see their developers' keys and sessions, and may end or forget them.
register(TeamSignIn, Rule(ALL_ROLES, ADMIN, ("team__organization_id",), team_paths=("team_id",)))
register(OrganizationSignIn, Rule(ALL_ROLES - {Role.TEAM_LEAD}, ADMIN, ("organization_id",)))
for _signed_in in (DeveloperKey, SignInSession):
    register(
        _signed_in,
        Rule(
            ALL_ROLES,
            frozenset({Role.PLATFORM_ADMIN, Role.TEAM_LEAD}),
            ("team__organization_id",),
            team_paths=("team_id",),
            team_change_paths=("team_id",),
        ),
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a user holds one role: everywhere, or in these organizations."""

    everywhere: bool = False
    organizations: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return self.everywhere or bool(self.organizations)

    def covers(self, organization_id: int | None) -> bool:
        return self.everywhere or organization_id in self.organizations


@dataclass(frozen=True, slots=True)
class Access:
    user_id: int | None
    superuser: bool = False
    scopes: dict[Role, Scope] = field(default_factory=dict)
    led_teams: frozenset[int] = frozenset()

    # --- who ------------------------------------------------------------------------------

    @classmethod
    def of(cls, user: AbstractBaseUser | AnonymousUser | Any) -> Access:
        """The user's access, computed once per user object (one query)."""
        cached: Access | None = getattr(user, "_gateway_access", None)
        if cached is None:
            cached = cls._load(user)
            with contextlib.suppress(AttributeError):  # slotted stand-ins
                setattr(user, "_gateway_access", cached)  # noqa: B010
        return cached

    @classmethod
    def _load(cls, user: Any) -> Access:
        if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
            return cls(user_id=None)
        if user.is_superuser:
            return cls(user_id=user.pk, superuser=True)
        everywhere: set[Role] = set()
        organizations: dict[Role, set[int]] = {}
        led: set[int] = set()
        for membership in Membership.objects.filter(user=user).prefetch_related("teams"):
            role = Role(membership.role)
            if membership.organization_id is None:
                everywhere.add(role)
            else:
                organizations.setdefault(role, set()).add(membership.organization_id)
            if role == Role.TEAM_LEAD:
                led.update(team.pk for team in membership.teams.all())
        scopes = {
            role: Scope(role in everywhere, frozenset(organizations.get(role, ())))
            for role in Role
            if role in everywhere or role in organizations
        }
        return cls(user_id=user.pk, scopes=scopes, led_teams=frozenset(led))

    def scope(self, role: Role) -> Scope:
        if self.superuser:
            return Scope(everywhere=True)
        return self.scopes.get(role, Scope())

    @property
    def has_any_role(self) -> bool:
        return self.superuser or any(self.scopes.values())

    def holds(self, role: Role, organization_id: int | None = None) -> bool:
        """Whether the user holds `role` in that organization (None: everywhere)."""
        scope = self.scope(role)
        return scope.everywhere if organization_id is None else scope.covers(organization_id)

    def organizations(self, roles: Iterable[Role] = ALL_ROLES) -> Scope:
        """Every organization where the user holds one of `roles` (team leads: where they
        lead a team is not included; see `led_teams`)."""
        scopes = [self.scope(role) for role in roles]
        if any(scope.everywhere for scope in scopes):
            return Scope(everywhere=True)
        return Scope(organizations=frozenset().union(*(s.organizations for s in scopes)))

    # --- rows -------------------------------------------------------------------------------

    def visible(self, queryset: QuerySet[M]) -> QuerySet[M]:
        """The rows of `queryset` the user may view."""
        condition = self.condition(queryset.model, "view")
        if condition is None:
            return queryset
        return queryset.filter(condition).distinct() if condition else queryset.none()

    def changeable(self, queryset: QuerySet[M]) -> QuerySet[M]:
        condition = self.condition(queryset.model, "change")
        if condition is None:
            return queryset
        return queryset.filter(condition).distinct() if condition else queryset.none()

    def condition(self, model: type[models.Model], action: Action) -> Q | None:
        """A filter for the rows allowed, None for all rows, an empty Q() for none."""
        if self.superuser:
            return None
        if model is ApiToken and not self.scope(Role.PLATFORM_ADMIN).everywhere:
            return Q(user_id__in=frozenset({self.user_id})) if self.user_id is not None else Q()
        rule = _rule(model)
        roles = rule.view if action == "view" else rule.change
        if rule.through is not None:
            return self._through(rule.through, action) if roles else Q()
        team_paths = rule.team_paths if action == "view" else rule.team_change_paths
        condition = Q()
        allowed = False
        for role in roles:
            scope = self.scope(role)
            if role == Role.TEAM_LEAD and rule.org_paths is not None:
                if self.led_teams and team_paths:
                    condition |= _any_in(team_paths, self.led_teams)
                    allowed = True
                continue
            if not scope or (role in rule.everywhere_only and not scope.everywhere):
                continue
            if rule.org_paths is None:
                if scope.everywhere or action == "view":
                    return None  # shared rows: readable by every role, changed from everywhere
                continue
            if scope.everywhere:
                return None
            condition |= _any_in(rule.org_paths, scope.organizations)
            allowed = True
        return condition if allowed else Q()

    def _through(self, through: tuple[str, type[models.Model]], action: Action) -> Q | None:
        column, model = through
        condition = self.condition(model, action)
        if not condition:
            return condition  # None (every row) or Q() (none)
        ids = model._default_manager.filter(condition).values_list("pk", flat=True)
        return Q(**{f"{column}__in": ids})

    def allows(self, model: type[models.Model], action: Action) -> bool:
        """Whether the user may `action` at least some rows of `model`: what the admin shows
        in its index, and whether it offers to add one."""
        condition = self.condition(model, action)
        return condition is None or bool(condition)

    def can(self, action: Action, obj: models.Model) -> bool:
        """Object-level check on one row, saved or not (a row about to be created is checked
        on the organization and team it names)."""
        condition = self.condition(type(obj), action)
        if condition is None:
            return True
        if not condition:
            return False
        return _matches(obj, condition)

    def can_view(self, obj: models.Model) -> bool:
        return self.can("view", obj)

    def can_change(self, obj: models.Model) -> bool:
        return self.can("change", obj)

    # --- the request log and spend ------------------------------------------------------------

    def usage_condition(
        self, *, organization_field: str = "organization_id", team_field: str = "team_id"
    ) -> Q | None:
        """Which ledger rows (or rollup cells) the user may read: None for all, Q() for none.

        Platform admins, finance and auditors read their organizations'; team leads their
        teams'."""
        if self.superuser:
            return None
        orgs = self.organizations((Role.PLATFORM_ADMIN, Role.FINANCE, Role.AUDITOR))
        if orgs.everywhere:
            return None
        condition = Q()
        if orgs.organizations:
            condition |= Q(**{f"{organization_field}__in": orgs.organizations})
        if self.led_teams:
            condition |= Q(**{f"{team_field}__in": self.led_teams})
        return condition

    def can_read_usage(self, organization_id: int | None, team_id: int | None) -> bool:
        condition = self.usage_condition()
        if condition is None:
            return True
        orgs = self.organizations((Role.PLATFORM_ADMIN, Role.FINANCE, Role.AUDITOR))
        return orgs.covers(organization_id) or (team_id is not None and team_id in self.led_teams)


def _rule(model: type[models.Model]) -> Rule:
    for klass in model.__mro__:
        rule = RULES.get(klass)
        if rule is not None:
            return rule
    raise LookupError(f"no access rule for {model.__name__}: register one")


def _any_in(paths: tuple[str, ...], ids: frozenset[int]) -> Q:
    condition = Q()
    for path in paths:
        condition |= Q(**{f"{path}__in": ids})
    return condition


def _matches(obj: models.Model, condition: Q) -> bool:
    """Evaluate an OR of `path__in` lookups on an instance (saved or not)."""
    for child in condition.children:
        if isinstance(child, Q):
            if _matches(obj, child):
                return True
            continue
        lookup, ids = child  # type: ignore[misc]
        path = lookup.removesuffix("__in")
        if any(value in ids for value in _values(obj, path)):
            return True
    return False


def _values(obj: Any, path: str) -> list[Any]:
    """The values at a `__` path of an instance, following foreign keys and many-to-many."""
    head, _, rest = path.partition("__")
    if not rest:
        value = getattr(obj, head, None)
        return [value] if value is not None else []
    related = getattr(obj, head, None)
    if related is None:
        return []
    if hasattr(related, "all") and getattr(obj, "pk", None) is not None:
        return [v for item in related.all() for v in _values(item, rest)]
    if hasattr(related, "all"):
        return []
    return _values(related, rest)
