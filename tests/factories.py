"""Test data built through the real services, so every row is audited like production's."""

from __future__ import annotations

import itertools
from typing import Any

from governance.actors import Actor
from governance.models import (
    Budget,
    ModelPolicy,
    Organization,
    Project,
    RateLimit,
    Team,
    VirtualKey,
)
from governance.services import common, keys
from governance.services.keys import IssuedKey

TEST_ACTOR = Actor.system("tests")
_seq = itertools.count(1)


def organization(**fields: Any) -> Organization:
    org = Organization(name=fields.pop("name", f"org-{next(_seq)}"), **fields)
    common.save_instance(org, actor=TEST_ACTOR)
    return org


def team(*, organization: Organization | None = None, **fields: Any) -> Team:
    obj = Team(
        organization=organization or globals()["organization"](),
        name=fields.pop("name", f"team-{next(_seq)}"),
        **fields,
    )
    common.save_instance(obj, actor=TEST_ACTOR)
    return obj


def project(*, organization: Organization | None = None, **fields: Any) -> Project:
    obj = Project(
        organization=organization or globals()["organization"](),
        name=fields.pop("name", f"project-{next(_seq)}"),
        **fields,
    )
    common.save_instance(obj, actor=TEST_ACTOR)
    return obj


def issued_key(
    *,
    organization: Organization | None = None,
    team: Team | None = None,
    parent: VirtualKey | None = None,
    **fields: Any,
) -> IssuedKey:
    if parent is not None:
        organization = parent.organization
    elif team is not None:
        organization = team.organization
    return keys.create_key(
        actor=TEST_ACTOR,
        organization=organization or globals()["organization"](),
        team=team,
        parent=parent,
        name=fields.pop("name", f"key-{next(_seq)}"),
        **fields,
    )


def virtual_key(**fields: Any) -> VirtualKey:
    return issued_key(**fields).key


def budget(
    *, owner: Organization | Team | Project | VirtualKey, amount_micros: int, **fields: Any
) -> Budget:
    if isinstance(owner, Organization):
        obj = Budget(organization=owner, amount_micros=amount_micros, **fields)
    else:
        kind = {Team: "team", Project: "project", VirtualKey: "virtual_key"}[type(owner)]
        obj = Budget(
            organization=owner.organization, amount_micros=amount_micros, **{kind: owner}, **fields
        )
    common.save_instance(obj, actor=TEST_ACTOR)
    return obj


def rate_limit(*, owner: Team | VirtualKey, **fields: Any) -> RateLimit:
    kind = "team" if isinstance(owner, Team) else "virtual_key"
    obj = RateLimit(**{kind: owner}, **fields)
    common.save_instance(obj, actor=TEST_ACTOR)
    return obj


def model_policy(*, owner: Team | VirtualKey, **fields: Any) -> ModelPolicy:
    kind = "team" if isinstance(owner, Team) else "virtual_key"
    obj = ModelPolicy(**{kind: owner}, **fields)
    common.save_instance(obj, actor=TEST_ACTOR)
    return obj
