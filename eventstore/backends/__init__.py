"""Storage backends and the URL scheme that selects one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import UnsupportedURLError
from ..privacy.urls import safe_url
from .base import Backend, Checkpoint

__all__ = ["Backend", "Checkpoint", "backend_for_url"]

SQLITE_URL_OPTIONS = frozenset({"synchronous", "busy_timeout", "create", "watch_interval"})
JSONL_URL_OPTIONS = frozenset({"synchronous", "lock_timeout", "create", "watch_interval"})
# eventstore's own options in a postgresql:// query string; the rest go to asyncpg.
POSTGRES_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "schema": str, "pool_size": int, "min_pool_size": int, "command_timeout": float,
    "connect_timeout": float, "create": str,
}


def backend_for_url(url: str, **options: Any) -> Backend:
    """The backend a store URL names.

    `memory://` (private) or `memory://name` (shared in-process), `sqlite:///relative.db`,
    `sqlite:////absolute.db` (options synchronous, busy_timeout, create, watch_interval),
    `jsonl:///relative/dir`, `jsonl:////absolute/dir` (options synchronous, lock_timeout,
    create, watch_interval), `postgresql://user@host:port/db` (options schema, pool_size,
    min_pool_size, command_timeout, connect_timeout, create; others go to asyncpg).
    Messages quote URLs without their passwords.
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
                f"SQLite URL {safe_url(url)!r} has no file path; use "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db"
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
            raise UnsupportedURLError(
                f"bad SQLite URL option in {safe_url(url)!r}: {exc}") from exc
    if scheme == "jsonl":
        from .jsonl import JsonlBackend

        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc or not path:
            raise UnsupportedURLError(
                f"jsonl URL {safe_url(url)!r} has no directory; use jsonl:///relative/dir "
                "or jsonl:////absolute/dir"
            )
        given: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(given) - JSONL_URL_OPTIONS
        if unknown:
            raise UnsupportedURLError(
                f"unknown jsonl URL option(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(sorted(JSONL_URL_OPTIONS))}"
            )
        try:
            return JsonlBackend(path, **given, **options)
        except (TypeError, ValueError) as exc:
            raise UnsupportedURLError(
                f"bad jsonl URL option in {safe_url(url)!r}: {exc}") from exc
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:  # asyncpg is an optional extra
            raise UnsupportedURLError(
                "PostgreSQL needs asyncpg: pip install 'eventstore[postgres]'"
            ) from exc
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in POSTGRES_URL_OPTIONS}
        rest = "&".join(f"{k}={v}" for k, v in query if k not in POSTGRES_URL_OPTIONS)
        try:
            typed: dict[str, Any] = {k: POSTGRES_URL_OPTIONS[k](v) for k, v in ours.items()}
            return PostgresBackend(parts._replace(query=rest).geturl(), **{**typed, **options})
        except (TypeError, ValueError) as exc:
            raise UnsupportedURLError(
                f"bad PostgreSQL URL option in {safe_url(url)!r}: {exc}") from exc
    raise UnsupportedURLError(
        f"unknown store URL {safe_url(url)!r}; use memory://, sqlite:///path.db, "
        "jsonl:///dir or postgresql://user@host:port/db"
    )
