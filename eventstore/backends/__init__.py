"""Storage backends, and the scheme table that picks one for a store URL.

    from eventstore.backends import register_scheme

    def open_mine(url: str, **options: Any) -> Backend:
        return MyBackend(url, **options)

    register_scheme("mine", open_mine)
    EventStore.open("mine://somewhere")

A backend implements the protocols of eventstore.backends.protocols (at least `Backend`:
log, checkpoints, metadata) and proves it by subclassing
`eventstore.testing.BackendConformance`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import UnsupportedURLError
from ..privacy.urls import safe_url
from .base import Checkpoint, KeyRecord
from .protocols import (
    Backend,
    CheckpointStore,
    CommitListener,
    CostTotalsReader,
    EventLog,
    KeyLister,
    KeyStore,
    MetadataStore,
)

__all__ = [
    "Backend",
    "BackendFactory",
    "Checkpoint",
    "CheckpointStore",
    "CommitListener",
    "CostTotalsReader",
    "EventLog",
    "KeyLister",
    "KeyRecord",
    "KeyStore",
    "MetadataStore",
    "backend_for_url",
    "register_scheme",
    "registered_schemes",
]

BackendFactory = Callable[..., Backend]
"""`factory(url, **options) -> Backend`: builds (does not open) a backend for a URL of
its scheme; options are the keyword arguments of `EventStore.open` meant for it."""

SQLITE_URL_OPTIONS = frozenset({"synchronous", "busy_timeout", "create", "watch_interval"})
JSONL_URL_OPTIONS = frozenset({"synchronous", "lock_timeout", "create", "watch_interval"})
# eventstore's own options in a postgresql:// query string; the rest go to asyncpg.
POSTGRES_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "schema": str, "pool_size": int, "min_pool_size": int, "command_timeout": float,
    "connect_timeout": float, "create": str,
}

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def _memory(url: str, **options: Any) -> Backend:
    from .memory import MemoryBackend, named_memory_backend

    if options:
        raise UnsupportedURLError(f"memory:// takes no options, got {', '.join(options)}")
    name = url.split("://", 1)[1]
    return named_memory_backend(name) if name else MemoryBackend()


def _sqlite(url: str, **options: Any) -> Backend:
    from .sqlite import SQLiteBackend

    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path:
        raise UnsupportedURLError(
            f"SQLite URL {safe_url(url)!r} has no file path; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    if path == ":memory:":
        # Every connection to :memory: is a database of its own, and the backend opens
        # several (writer, reader, checkpointer): an append would vanish from reads.
        raise UnsupportedURLError(
            f"{safe_url(url)!r} would give each of the store's SQLite connections a database "
            "of its own; for a log in memory use memory:// (private) or memory://name "
            "(shared in this process)"
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
        raise UnsupportedURLError(f"bad SQLite URL option in {safe_url(url)!r}: {exc}") from exc


def _jsonl(url: str, **options: Any) -> Backend:
    from .jsonl import JsonlBackend

    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path:
        raise UnsupportedURLError(
            f"jsonl URL {safe_url(url)!r} has no directory; use jsonl:///relative/dir or "
            "jsonl:////absolute/dir"
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
        raise UnsupportedURLError(f"bad jsonl URL option in {safe_url(url)!r}: {exc}") from exc


def _postgres(url: str, **options: Any) -> Backend:
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
        raise UnsupportedURLError(f"bad PostgreSQL URL option in {safe_url(url)!r}: {exc}") from exc


_SCHEMES: dict[str, BackendFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "jsonl": _jsonl,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def register_scheme(scheme: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make `scheme://...` URLs open backends built by `factory(url, **options)`.

    Scheme names are lowercase (letters, digits, + . -, starting with a letter), as in
    RFC 3986. Registering a scheme that is taken raises ValueError unless `replace=True`.
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"{scheme!r} is not a URL scheme name (lowercase letters, digits, "
                         "+ . -, starting with a letter)")
    if not callable(factory):
        raise TypeError("register_scheme() needs a callable factory(url, **options)")
    if scheme in _SCHEMES and not replace and _SCHEMES[scheme] is not factory:
        raise ValueError(f"URL scheme {scheme!r} is already registered; pass replace=True "
                         "to replace it")
    _SCHEMES[scheme] = factory


def registered_schemes() -> list[str]:
    """The URL schemes a store can open, sorted."""
    return sorted(_SCHEMES)


def backend_for_url(url: str, **options: Any) -> Backend:
    """The backend a store URL names.

    `memory://` (private) or `memory://name` (shared in-process), `sqlite:///relative.db`,
    `sqlite:////absolute.db` (options synchronous, busy_timeout, create, watch_interval),
    `jsonl:///relative/dir`, `jsonl:////absolute/dir` (options synchronous, lock_timeout,
    create, watch_interval), `postgresql://user@host:port/db` (options schema, pool_size,
    min_pool_size, command_timeout, connect_timeout, create; others go to asyncpg), and every
    scheme added with `register_scheme`.
    """
    if not isinstance(url, str):
        raise UnsupportedURLError(f"store URL must be a string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    factory = _SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in registered_schemes())
        raise UnsupportedURLError(
            f"unknown store URL {safe_url(url)!r}; use one of {known} (e.g. sqlite:///path.db), or "
            "register a scheme with eventstore.backends.register_scheme"
        )
    backend = factory(url, **options)
    if not isinstance(backend, Backend):
        raise UnsupportedURLError(
            f"the {scheme}:// factory returned {type(backend).__name__}, which is not an "
            "eventstore Backend (see eventstore.backends.protocols)"
        )
    return backend
