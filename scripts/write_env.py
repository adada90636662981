"""Write a local .env with fresh secrets, once. An existing .env is never touched.

`make run` calls this before anything reads the settings: with DEBUG off the settings refuse the
built-in development secret, so the embedded default needs a real DJANGO_SECRET_KEY, and
GATEWAY_ENCRYPTION_KEY keeps stored provider credentials readable if that key is ever rotated.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

HEADER = (
    "# Written by scripts/write_env.py (`make run` calls it). Never commit this file.\n"
    "# Production sets these in the environment instead (see README.md).\n"
)


def render() -> str:
    return (
        HEADER
        + f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}\n"
        + f"GATEWAY_ENCRYPTION_KEY={Fernet.generate_key().decode()}\n"
        # Keys the audit chain's HMAC (governance/services/audit.py); kept out of the database.
        + f"GATEWAY_AUDIT_KEY={secrets.token_urlsafe(48)}\n"
    )


def write_once(path: Path) -> bool:
    """Create `path` readable by its owner only. Returns False if it already existed."""
    try:
        # O_EXCL: never overwrite, even if another `make run` races this one.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(render())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=".env", type=Path)
    args = parser.parse_args(argv)
    if write_once(args.path):
        print(
            f"Wrote {args.path} with a fresh DJANGO_SECRET_KEY, GATEWAY_ENCRYPTION_KEY "
            "and GATEWAY_AUDIT_KEY."
        )
    else:
        print(f"Keeping the existing {args.path}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
