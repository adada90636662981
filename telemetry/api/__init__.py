"""Telemetry's REST endpoints under /api/v1/: usage and spend reports (reports.py), a virtual
key's self-service view of its own budgets (me.py), and alert channels and alerts (alerts.py)."""
