"""Single sign-on: who a user is at the identity provider, and what the IdP's groups grant.

The mapping is read at each OpenID Connect sign-in (governance/services/identities.py): the
groups claim is matched, exactly and case-sensitively, against `IdpGroupRole` (a role in an
organization, or everywhere) and `TeamIdpGroup` (a team). A team lead leads the teams whose
groups they are in; the Claude Code sign-in (issue 12) maps plain members to their teams the
same way.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models.access import Role
from governance.models.base import TimestampedModel
from governance.models.orgs import Organization, Team

GROUP_HELP = "The group's name exactly as the identity provider sends it (case-sensitive)."


class IdpGroupRole(TimestampedModel):
    """Members of an IdP group hold `role` in `organization` (empty: every organization)."""

    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="idp_group_roles",
        help_text="Empty: every organization.",
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    group = models.CharField(max_length=200, help_text=GROUP_HELP)

    class Meta:
        verbose_name = "IdP group role"
        # No join in the default order: the audited writes lock rows with SELECT FOR UPDATE,
        # which PostgreSQL refuses across the nullable organization (the admin sorts by it).
        ordering = ["group", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "role", "group"], name="idp_group_role_unique"
            ),
            models.UniqueConstraint(
                fields=["role", "group"],
                condition=models.Q(organization__isnull=True),
                name="idp_group_role_unique_global",
            ),
        ]

    def __str__(self) -> str:
        where = self.organization.name if self.organization is not None else "all organizations"
        return f"{self.group} → {self.get_role_display().split(' (')[0]} of {where}"


class TeamIdpGroup(TimestampedModel):
    """Members of an IdP group belong to `team`: its team leads lead it, its developers are
    charged to it when they sign in from Claude Code."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="idp_groups")
    group = models.CharField(max_length=200, help_text=GROUP_HELP)

    class Meta:
        verbose_name = "team IdP group"
        ordering = ["group"]
        constraints = [
            models.UniqueConstraint(fields=["team", "group"], name="team_idp_group_unique")
        ]

    def __str__(self) -> str:
        return f"{self.group} → team {self.team}"


class OIDCIdentity(TimestampedModel):
    """The identity provider's subject (`iss` + `sub`) a user signs in as: users are matched on
    it alone, never on their email (an IdP may assert any email)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity"
    )
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    email = models.CharField(max_length=254, blank=True, help_text="As of the last sign-in.")
    groups = models.JSONField(default=list, blank=True, help_text="As of the last sign-in.")

    class Meta:
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"
        ordering = ["issuer", "subject"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"
