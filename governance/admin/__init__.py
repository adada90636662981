"""Django admin for governance: every write goes through the audited services.

Importing the modules registers their ModelAdmins with the default admin site.
"""

from __future__ import annotations

from governance.admin import (
    audit,
    budgets,
    keys,
    limits,
    orgs,
    providers,
    roles,
    signin,
    tools,
    users,
)

__all__ = [
    "audit",
    "budgets",
    "keys",
    "limits",
    "orgs",
    "providers",
    "roles",
    "signin",
    "tools",
    "users",
]
