"""PostgreSQL: for users who outgrow one machine (asyncpg; gap-free order across writers)."""

from ..schema import SCHEMA_VERSION
from .backend import PostgresBackend

__all__ = ["SCHEMA_VERSION", "PostgresBackend"]
