"""The tables SQLite and PostgreSQL share, written once.

Each migration upgrades the schema from version N-1 to N and runs in one transaction.
Statements are templates: `{s}` is the table prefix (empty for SQLite, the quoted schema
and a dot for PostgreSQL), and the column types are named by role so each dialect maps
them to its own: `{int}` (64-bit integer), `{blob}` (bytes), `{money}` (an exact decimal:
decimal text in SQLite, whose numbers are binary floats, numeric in PostgreSQL) and
`{keyed}` (SQLite's WITHOUT ROWID for tables whose primary key is the whole point).

recorded_at is integer microseconds, exact, and the same bounds Query computes. body is
bytes, not JSON, because the stored document must read back byte for byte (PostgreSQL's
jsonb reorders keys and drops duplicates).
"""

from __future__ import annotations

from typing import Final

from ..rollup import INT_COLUMNS

SCHEMA_VERSION: Final = 3

_COUNTERS = ",\n    ".join(f"{name} {{int}} NOT NULL" for name in INT_COLUMNS)

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE {s}events (
            seq {int} PRIMARY KEY,
            id text NOT NULL UNIQUE,
            type text NOT NULL,
            conversation_id text,
            user_id text,
            recorded_at {int} NOT NULL,
            digest {blob} NOT NULL,
            body {blob} NOT NULL
        )""",
        # One index per filter, each ending in seq, so a filtered page is an index range
        # read in seq order with no sort and no table scan. recorded_at only serves to
        # find the seq range of a time window (it never decreases along seq).
        "CREATE INDEX events_by_conversation ON {s}events (conversation_id, seq)",
        "CREATE INDEX events_by_user ON {s}events (user_id, seq)",
        "CREATE INDEX events_by_type ON {s}events (type, seq)",
        "CREATE INDEX events_by_recorded_at ON {s}events (recorded_at, seq)",
        """CREATE TABLE {s}checkpoints (
            name text PRIMARY KEY,
            position {int} NOT NULL,
            state {blob},
            updated_at {int} NOT NULL
        )""",
    ),
    2: (
        # Per-user data keys for crypto-shredding (eventstore.encryption). A forgotten
        # generation keeps its row with wrapped = NULL: the tombstone.
        """CREATE TABLE {s}data_keys (
            user_id text NOT NULL,
            generation integer NOT NULL,
            wrapped {blob},
            created_at {int} NOT NULL,
            forgotten_at {int},
            PRIMARY KEY (user_id, generation)
        ){keyed}""",
    ),
    3: (
        # Derived tables, written in each commit's transaction and rebuilt from the log by
        # this migration (see eventstore.rollup). `bucket` encodes the whole key, so NULL
        # user or conversation ids (distinct in a unique index) still meet in one row.
        f"""CREATE TABLE {{s}}cost_buckets (
            bucket {{blob}} PRIMARY KEY,
            day {{int}} NOT NULL,
            user_id text,
            conversation_id text,
            provider text NOT NULL,
            model text NOT NULL,
            tag text NOT NULL,
            {_COUNTERS},
            cost {{money}} NOT NULL
        ){{keyed}}""",
        # Every cost question reads one tag ("" for all calls); the day range then bounds it.
        "CREATE INDEX cost_buckets_by_user ON {s}cost_buckets (tag, user_id, day)",
        "CREATE INDEX cost_buckets_by_conversation ON {s}cost_buckets "
        "(tag, conversation_id, day)",
        "CREATE INDEX cost_buckets_by_model ON {s}cost_buckets (tag, model, day)",
        "CREATE INDEX cost_buckets_by_day ON {s}cost_buckets (tag, day)",
        # One row per call, only for the partial days at the edges of a time window.
        """CREATE TABLE {s}cost_calls (
            seq {int} PRIMARY KEY,
            occurred_at {int} NOT NULL,
            user_id text,
            conversation_id text,
            provider text NOT NULL,
            model text NOT NULL,
            tags text,
            calls {int} NOT NULL,
            error {int} NOT NULL,
            unpriced {int} NOT NULL,
            cost {money},
            input_tokens {int} NOT NULL,
            output_tokens {int} NOT NULL,
            cache_read_tokens {int} NOT NULL,
            cache_write_tokens {int} NOT NULL,
            latency_us {int}
        )""",
        "CREATE INDEX cost_calls_by_time ON {s}cost_calls (occurred_at)",
        # Event counts per (type, user, conversation): count_events without a time bound
        # reads the few rows that match instead of every matching event.
        """CREATE TABLE {s}event_counts (
            bucket {blob} PRIMARY KEY,
            type text NOT NULL,
            user_id text,
            conversation_id text,
            n {int} NOT NULL
        ){keyed}""",
        "CREATE INDEX event_counts_by_type ON {s}event_counts (type)",
        "CREATE INDEX event_counts_by_user ON {s}event_counts (user_id)",
        "CREATE INDEX event_counts_by_conversation ON {s}event_counts (conversation_id)",
    ),
}

SQLITE_TYPES: Final = {"s": "", "int": "INTEGER", "blob": "BLOB", "money": "TEXT",
                       "keyed": " WITHOUT ROWID"}


def postgres_types(prefix: str) -> dict[str, str]:
    return {"s": prefix, "int": "bigint", "blob": "bytea", "money": "numeric", "keyed": ""}


def statements(version: int, types: dict[str, str]) -> list[str]:
    """The statements of one migration in a dialect."""
    return [template.format(**types) for template in MIGRATIONS[version]]
