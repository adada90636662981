"""Print how to reach the local gateway that `make run` is starting, with the demo credentials.

Stdlib only and no Django: it runs just before the server starts, on every `make run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def read_credentials(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as written by `manage.py seed_demo --credentials-file`."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def render(base_url: str, credentials: dict[str, str], credentials_path: Path) -> str:
    api_key = credentials.get("DEMO_API_KEY", "")
    username = credentials.get("DEMO_ADMIN_USERNAME", "")
    password = credentials.get("DEMO_ADMIN_PASSWORD", "")
    if username and password:
        login = f"{username} / {password}"
    elif username:
        login = f"{username} (an existing user: password unchanged)"
    else:
        login = "unknown: create one with `.venv/bin/python manage.py createsuperuser`"
    lines = [
        "",
        "=" * 72,
        f"Claude gateway on {base_url}  (Ctrl-C stops it)",
        "",
        f"  Admin:        {base_url}/admin/",
        f"  Admin login:  {login}",
        "",
        "  Point Claude Code (or any Anthropic client) at it:",
        f"    export ANTHROPIC_BASE_URL={base_url}/anthropic",
        f"    export ANTHROPIC_API_KEY={api_key or '<a virtual key: create one in the admin>'}",
        "",
    ]
    if credentials:
        lines.append(
            f"  Demo credentials come from {credentials_path} (local dev only, never production)."
        )
    else:
        lines.append(f"  No {credentials_path}: this database was not seeded by `make run`.")
    lines += ["  The demo models are answered by the built-in mock provider.", "=" * 72, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--credentials", default=".demo-credentials", type=Path)
    args = parser.parse_args(argv)
    base_url = args.url.rstrip("/")
    print(render(base_url, read_credentials(args.credentials), args.credentials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
