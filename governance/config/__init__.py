"""Config as code: `manage.py apply_config FILE.yaml` (see examples/governance.yaml)."""

from __future__ import annotations

from governance.config.applier import ApplyResult, apply_document, apply_file
from governance.config.errors import ConfigError

__all__ = ["ApplyResult", "ConfigError", "apply_document", "apply_file"]
