"""Storage backends and the URL scheme that selects one."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import UnsupportedURLError
from .base import Backend, Checkpoint

__all__ = ["Backend", "Checkpoint", "backend_for_url"]

SQLITE_URL_OPTIONS = frozenset({"synchronous", "busy_timeout", "create"})


def backend_for_url(url: str, **options: Any) -> Backend:
    """The backend a store URL names.

    `memory://` (private) or `memory://name` (shared in-process), `sqlite:///relative.db`,
    `sqlite:////absolute.db` (options synchronous, busy_timeout, create), `postgresql://...`.
    """
    if not isinstance(url, str):
        raise UnsupportedURLError(f"store URL must be a string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from .memory import MemoryBackend, named_memory_backend

        name = url.split("://", 1)[1]
        return named_memory_backend(name) if name else MemoryBackend()
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc or not path:
            raise UnsupportedURLError(
                f"SQLite URL {url!r} has no file path; use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(params) - SQLITE_URL_OPTIONS
        if unknown:
            raise UnsupportedURLError(
                f"unknown SQLite URL option(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(sorted(SQLITE_URL_OPTIONS))}"
            )
        try:
            return SQLiteBackend(path, **params, **options)
        except (TypeError, ValueError) as exc:
            raise UnsupportedURLError(f"bad SQLite URL option in {url!r}: {exc}") from exc
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:  # asyncpg is an optional extra
            raise UnsupportedURLError(
                "PostgreSQL needs asyncpg: pip install 'eventstore[postgres]'"
            ) from exc
        return PostgresBackend(url, **options)
    raise UnsupportedURLError(
        f"unknown store URL {url!r}; use memory://, sqlite:///path.db or "
        "postgresql://user@host:port/db"
    )
