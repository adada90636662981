from __future__ import annotations

from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        # Governance's admin must not import telemetry, so telemetry hangs its "budget used"
        # column on the governance lists itself (imported here: it needs the models loaded).
        from governance.admin.base import add_list_column
        from governance.models import Provider
        from telemetry.dashboards.admin_columns import add_budget_use_columns
        from telemetry.provider_health import ProviderHealthColumn

        add_budget_use_columns()
        add_list_column(Provider, ProviderHealthColumn())

        # Roles (governance.access) for the ledger, rollups, alerts and period records.
        from telemetry.access import register_rules

        register_rules()

        # Alert channels and alerts in the REST API, on governance's /api/v1/ router.
        from telemetry.api.alerts import register_routes

        register_routes()
