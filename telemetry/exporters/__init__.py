"""Exporters to other observability tools: OpenTelemetry (traces) and Datadog (metrics)."""

from __future__ import annotations
