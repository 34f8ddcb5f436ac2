"""SQLite: the embedded default backend (one file, WAL, one writer thread)."""

from ..schema import SCHEMA_VERSION
from .backend import SQLiteBackend

__all__ = ["SCHEMA_VERSION", "SQLiteBackend"]
