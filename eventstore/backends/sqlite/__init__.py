"""SQLite: the embedded default backend (one file, WAL, one writer thread)."""

from .backend import SCHEMA_VERSION, SQLiteBackend

__all__ = ["SCHEMA_VERSION", "SQLiteBackend"]
