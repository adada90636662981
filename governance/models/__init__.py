"""Governance data model; import models from here."""

from __future__ import annotations

from governance.models.access import ApiToken, Membership, Role
from governance.models.api import IdempotencyRecord
from governance.models.audit import AuditChainHead, AuditEvent, PolicyChange
from governance.models.budgets import Budget
from governance.models.identity import IdpGroupRole, OIDCIdentity, TeamIdpGroup
from governance.models.keys import VirtualKey
from governance.models.limits import ModelPolicy, RateLimit
from governance.models.orgs import Organization, Project, Team
from governance.models.prices import ModelPrice
from governance.models.providers import Deployment, ModelRoute, Provider
from governance.models.signin import (
    DeveloperKey,
    DeviceGrant,
    OrganizationSignIn,
    SignInSession,
    TeamSignIn,
)
from governance.models.tools import MCPServer, MCPToolGrant, MCPToolPrice

__all__ = [
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "Budget",
    "Deployment",
    "DeveloperKey",
    "DeviceGrant",
    "IdempotencyRecord",
    "IdpGroupRole",
    "MCPServer",
    "MCPToolGrant",
    "MCPToolPrice",
    "Membership",
    "ModelPolicy",
    "ModelPrice",
    "ModelRoute",
    "OIDCIdentity",
    "Organization",
    "OrganizationSignIn",
    "PolicyChange",
    "Project",
    "Provider",
    "RateLimit",
    "Role",
    "SignInSession",
    "Team",
    "TeamIdpGroup",
    "TeamSignIn",
    "VirtualKey",
]
