"""Export writers for `eventstore export`: JSON lines, CSV and Parquet.

Each writer takes pages of events and writes them to a binary stream as they come, so an
export of any size runs in the memory of one page. The flat formats (CSV, Parquet) carry
`data` and `metadata` as JSON text columns: payloads are open-ended dicts, and JSON keeps
them exact (Decimal strings, nested values) where splitting them into columns would not.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from collections.abc import Iterator
from typing import IO, Any, Protocol

import click
import msgspec

from ..errors import MissingDependencyError
from ..events import RecordedEvent
from ..query import Query as Filters
from ..store import EventStore
from .base import filter_options, make_filters, note, pages, progress_bar, where, with_store
from .render import iso

FORMATS = ("jsonl", "csv", "parquet")
COLUMNS = ("seq", "id", "type", "conversation_id", "user_id", "occurred_at", "recorded_at",
           "data", "metadata")

_json = msgspec.json.Encoder(decimal_format="string")


class Writer(Protocol):
    def write(self, events: list[RecordedEvent]) -> None: ...

    def close(self) -> None:
        """Finish the output (a Parquet footer); the stream itself stays open."""


class JsonlWriter:
    """One RecordedEvent per line, exactly as msgspec encodes it (decodes back equal)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._buffer = bytearray()

    def write(self, events: list[RecordedEvent]) -> None:
        buffer = self._buffer
        buffer.clear()
        for event in events:
            _json.encode_into(event, buffer, -1)
            buffer.extend(b"\n")
        self._out.write(buffer)

    def close(self) -> None:
        self._out.flush()


def flat_row(event: RecordedEvent) -> list[Any]:
    return [event.seq, event.id, event.type, event.conversation_id, event.user_id,
            iso(event.occurred_at), iso(event.recorded_at),
            _json.encode(event.data).decode(), _json.encode(event.metadata).decode()]


class CsvWriter:
    """RFC 4180 CSV with a header row; an absent conversation or user is an empty cell."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\r\n")
        self._csv.writerow(COLUMNS)

    def write(self, events: list[RecordedEvent]) -> None:
        self._csv.writerows(flat_row(event) for event in events)
        self._out.write(self._text.getvalue().encode("utf-8"))
        self._text.seek(0)
        self._text.truncate()

    def close(self) -> None:
        self.write([])  # the header of an empty export
        self._out.flush()


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependencyError(
            "Parquet export needs pyarrow: pip install 'eventstore[parquet]'"
        ) from exc
    return pa, pq


class ParquetWriter:
    """One row group per page; times as UTC microsecond timestamps (what the log keeps)."""

    def __init__(self, out: IO[bytes]) -> None:
        pa, pq = _pyarrow()
        self._pa = pa
        utc = pa.timestamp("us", tz="UTC")
        self._schema = pa.schema([
            ("seq", pa.int64()), ("id", pa.string()), ("type", pa.string()),
            ("conversation_id", pa.string()), ("user_id", pa.string()),
            ("occurred_at", utc), ("recorded_at", utc),
            ("data", pa.string()), ("metadata", pa.string()),
        ])
        self._writer = pq.ParquetWriter(out, self._schema, compression="zstd")

    def write(self, events: list[RecordedEvent]) -> None:
        if not events:
            return
        columns: dict[str, list[Any]] = {
            "seq": [e.seq for e in events],
            "id": [e.id for e in events],
            "type": [e.type for e in events],
            "conversation_id": [e.conversation_id for e in events],
            "user_id": [e.user_id for e in events],
            "occurred_at": [e.occurred_at for e in events],
            "recorded_at": [e.recorded_at for e in events],
            "data": [_json.encode(e.data).decode() for e in events],
            "metadata": [_json.encode(e.metadata).decode() for e in events],
        }
        self._writer.write_table(self._pa.table(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def writer_for(fmt: str, out: IO[bytes]) -> Writer:
    if fmt == "csv":
        return CsvWriter(out)
    if fmt == "parquet":
        return ParquetWriter(out)
    return JsonlWriter(out)


def infer_format(output: str | None) -> str:
    """The format an output file's suffix names; JSON lines otherwise."""
    if output:
        lowered = output.lower()
        for suffix, fmt in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet")):
            if lowered.endswith(suffix):
                return fmt
    return "jsonl"


@contextlib.contextmanager
def output_stream(path: str | None, fmt: str) -> Iterator[IO[bytes]]:
    """The binary stream to export into. A file is written beside its final name and
    renamed into place on success, so a failed or interrupted export never leaves a
    truncated file that looks complete."""
    if path is None or path == "-":
        if fmt == "parquet" and sys.stdout.isatty():
            raise click.UsageError("Parquet is binary: pass --output FILE or redirect stdout")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.FileError(path, f"the folder {folder} does not exist")
    partial = f"{path}.partial"
    try:
        stream = open(partial, "wb")
    except OSError as exc:
        # Name the file the user asked for, not the temporary name beside it.
        raise click.FileError(path, exc.strerror or str(exc)) from exc
    try:
        with stream:
            yield stream
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


async def export(store: EventStore, f: Filters, fmt: str, output: str | None) -> int:
    """Write every matching event; returns how many."""
    if fmt == "parquet":
        _pyarrow()  # fail before anything is opened or written
    total = await store.count_events(**where(f))
    written = 0
    with output_stream(output, fmt) as stream, progress_bar() as bar:
        task = bar.add_task("export", total=total)
        writer = writer_for(fmt, stream)
        async for page in pages(store, f):
            writer.write(page)
            written += len(page)
            bar.update(task, completed=written)
        writer.close()
    return written


@click.command("export")
@filter_options()
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: from the --output suffix, else jsonl).")
@click.option("-o", "--output", metavar="FILE", help="Write here instead of stdout.")
@with_store
async def export_cmd(store: EventStore, *, fmt: str | None, output: str | None,
                     **filters: Any) -> None:
    """Every matching event, oldest first, as JSON lines, CSV or Parquet.

    CSV and Parquet have one column per field, with data and metadata as JSON text.
    """
    fmt = fmt or infer_format(output)
    written = await export(store, make_filters(**filters), fmt, output)
    if output not in (None, "-"):
        note(f"exported {written} events to {output} ({fmt})")


COMMANDS = (export_cmd,)
