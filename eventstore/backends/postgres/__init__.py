"""PostgreSQL: for users who outgrow one machine (asyncpg; gap-free order across writers)."""

from .backend import SCHEMA_VERSION, PostgresBackend

__all__ = ["SCHEMA_VERSION", "PostgresBackend"]
