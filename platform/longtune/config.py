"""Environment-driven configuration helpers (no Django imports, safe to use anywhere).

Every setting has an embedded default so that a fresh clone runs with no services;
the environment switches each part to the real one (DATABASE_URL, REDIS_URL, S3_*).
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[2]


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def var_dir() -> Path:
    """Where the embedded default keeps its state (SQLite, objects, broker files, models)."""
    path = Path(os.environ.get("LONGTUNE_VAR_DIR", REPO_ROOT / "var"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def persistent_secret_key() -> str:
    """A per-installation secret for the embedded default, generated once and kept in var/."""
    key_file = var_dir() / ".secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def redis_reachable(url: str, timeout: float = 0.3) -> bool:
    """True when a TCP connection to the Redis URL's host:port succeeds."""
    if not url:
        return False
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "localhost", parsed.port or 6379), timeout
        ):
            return True
    except OSError:
        return False
