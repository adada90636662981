"""/api/v1/: governance's resources, and those other apps registered (routers.register)."""

from __future__ import annotations

from governance.api.routers import register, router
from governance.api.views import access, audit, catalog, keys, limits, orgs

register("organizations", orgs.OrganizationViewSet, "organizations")
register("teams", orgs.TeamViewSet, "teams")
register("projects", orgs.ProjectViewSet, "projects")
register("keys", keys.KeyViewSet, "keys")
register("budgets", limits.BudgetViewSet, "budgets")
register("rate-limits", limits.RateLimitViewSet, "rate-limits")
register("model-policies", limits.ModelPolicyViewSet, "model-policies")
register("providers", catalog.ProviderViewSet, "providers")
register("routes", catalog.RouteViewSet, "routes")
register("deployments", catalog.DeploymentViewSet, "deployments")
register("prices", catalog.PriceViewSet, "prices")
register("mcp-servers", catalog.MCPServerViewSet, "mcp-servers")
register("mcp-grants", catalog.MCPGrantViewSet, "mcp-grants")
register("memberships", access.MembershipViewSet, "memberships")
register("api-tokens", access.ApiTokenViewSet, "api-tokens")
register("audit-events", audit.AuditEventViewSet, "audit-events")

urlpatterns = router.urls
