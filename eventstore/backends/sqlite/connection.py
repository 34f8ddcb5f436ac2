"""Opening the SQLite backend's own connections (writer, checkpointer, commit watcher)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


def connect(path: Path, pragmas: Sequence[str]) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) with `pragmas` run in order,
    closed again if one of them fails. It may be used from another thread than the one
    that opened it, one thread at a time."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn
