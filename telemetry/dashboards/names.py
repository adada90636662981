"""Names for the plain ids that ledger and rollup rows carry: one query per kind and page."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from governance.models import Organization, Project, Team, VirtualKey


@dataclass
class Names:
    organizations: dict[int, str] = field(default_factory=dict)
    teams: dict[int, str] = field(default_factory=dict)
    projects: dict[int, str] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)

    def organization(self, pk: object) -> str:
        return _name(self.organizations, pk, "organization")

    def team(self, pk: object) -> str:
        return _name(self.teams, pk, "team")

    def project(self, pk: object) -> str:
        return _name(self.projects, pk, "project")

    def key(self, pk: object, fallback: str = "") -> str:
        if isinstance(pk, int) and pk and pk not in self.keys and fallback:
            return fallback  # the name the ledger row was written with (key since deleted)
        return _name(self.keys, pk, "key")


def _name(names: dict[int, str], pk: object, kind: str) -> str:
    if not isinstance(pk, int) or not pk:
        return f"no {kind}"
    return names.get(pk, f"#{pk}")


def _present(ids: Iterable[object]) -> list[int]:
    return sorted({pk for pk in ids if isinstance(pk, int) and pk})


def resolve(
    *,
    organizations: Iterable[object] = (),
    teams: Iterable[object] = (),
    projects: Iterable[object] = (),
    keys: Iterable[object] = (),
) -> Names:
    """Look up every id at once; kinds with no ids cost no query. Non-ids (a rollup group
    that is a model name, a 0 for "none") are skipped."""
    names = Names()
    org_ids, team_ids = _present(organizations), _present(teams)
    project_ids, key_ids = _present(projects), _present(keys)
    if org_ids:
        names.organizations = dict(
            Organization.objects.filter(pk__in=org_ids).values_list("pk", "name")
        )
    if team_ids:
        names.teams = dict(Team.objects.filter(pk__in=team_ids).values_list("pk", "name"))
    if project_ids:
        names.projects = dict(Project.objects.filter(pk__in=project_ids).values_list("pk", "name"))
    if key_ids:
        rows = VirtualKey.objects.filter(pk__in=key_ids).values_list("pk", "name", "parent__name")
        names.keys = {pk: f"{parent}/{name}" if parent else name for pk, name, parent in rows}
    return names
