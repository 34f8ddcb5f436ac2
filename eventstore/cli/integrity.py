"""`eventstore checkpoint`, `eventstore verify`, `eventstore prove`: the log's Merkle tree.

    eventstore checkpoint -o /mnt/auditor/today.checkpoint
    eventstore verify --checkpoint /mnt/auditor/today.checkpoint --key "$VKEY"
    eventstore prove 42

The signing key, if any, comes from EVENTSTORE_SIGNING_KEY, as for any store. An auditor
holds only the verifier key (`eventstore.integrity.verifier_key(signing_key, origin)`):
`verify --key` checks with it that the checkpoint was signed by the store's key.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from ..errors import MalformedNoteError, NoteVerificationError
from ..integrity.note import open_note, parse_checkpoint, parse_verifier_key
from ..integrity.types import to_json
from ..store import EventStore
from .base import note, with_store


@click.command("checkpoint")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the checkpoint to this file (refused if it exists) instead of "
                   "stdout.")
@with_store
async def checkpoint_cmd(store: EventStore, *, output: Path | None) -> None:
    """The log's current tree head as a C2SP checkpoint (a signed note with
    EVENTSTORE_SIGNING_KEY set). Keep it where the database's owner cannot rewrite it."""
    text = await store.checkpoint()
    if output is None:
        sys.stdout.write(text)
        return
    try:
        with output.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise click.UsageError(f"{output} exists; checkpoints are never overwritten") from None
    note(f"checkpoint of {text.splitlines()[1]} events written to {output}")


def _verifier_keys(values: tuple[str, ...]) -> list[str]:
    """The verifier key strings given to --key: each one itself, or a file holding one
    key per line."""
    keys: list[str] = []
    for value in values:
        path = Path(value)
        if path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            found = [line for line in lines if line and not line.startswith("#")]
            if not found:
                raise click.BadParameter(f"{value} holds no verifier key", param_hint="--key")
        else:
            found = [value.strip()]
        for key in found:
            try:
                parse_verifier_key(key)
            except MalformedNoteError as exc:
                raise click.BadParameter(
                    f"{exc} (give the verifier key string, or a file holding it)",
                    param_hint="--key") from None
        keys.extend(found)
    return keys


@click.command("verify")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(
    exists=True, dir_okay=False, path_type=Path),
    help="An earlier checkpoint of this log: also prove the log still extends it.")
@click.option("--key", "keys", multiple=True, metavar="VKEY",
              help="The verifier key the checkpoint must be signed with (the string "
                   "`eventstore.integrity.verifier_key` gives, `<name>+<id>+<key>`, or a "
                   "file holding it); repeatable.")
@with_store
async def verify_cmd(store: EventStore, *, checkpoint_file: Path | None,
                     keys: tuple[str, ...]) -> None:
    """Recompute every event's leaf and the whole tree from the database. Exit status 0
    when the log is intact, 1 with the first bad seq and what is wrong otherwise. With
    --key, the checkpoint must also carry a valid signature by that key (exit 1 if not):
    the public key alone proves the checkpoint came from the store's signing key."""
    if keys and checkpoint_file is None:
        raise click.UsageError("--key checks the signature of a checkpoint: give --checkpoint")
    verifiers = _verifier_keys(keys)
    text = checkpoint_file.read_text(encoding="utf-8") if checkpoint_file else None  # noqa: ASYNC240
    signed_by = ""
    if text is not None and verifiers:
        if "\n\n" not in text:
            sys.stdout.write(f"FAILED: the checkpoint {checkpoint_file} is not signed; --key "
                             "needs a checkpoint signed by the store's key\n")
            raise click.exceptions.Exit(1)
        try:
            signed = open_note(text, verifiers)
            parse_checkpoint(signed.text)
        except (MalformedNoteError, NoteVerificationError) as exc:
            sys.stdout.write(f"FAILED: the checkpoint {checkpoint_file} is not signed by the "
                             f"key given: {exc}\n")
            raise click.exceptions.Exit(1) from None
        signers = ", ".join(f"{sig.name}+{sig.key_id:08x}" for sig in signed.sigs)
        signed_by = f", signed by {signers}"
    report = await store.verify(text)
    root = base64.b64encode(report.root).decode()
    if report.ok:
        extends = (f", extends the checkpoint of {checkpoint_file}{signed_by}"
                   if checkpoint_file else "")
        sys.stdout.write(f"ok: {report.size} events, root {root}{extends}\n")
        return
    where = f"first bad seq {report.first_bad_seq}" if report.first_bad_seq is not None \
        else "no single bad seq"
    sys.stdout.write(f"FAILED: {where}; {report.size} events verified, root {root}\n")
    for problem in report.problems:
        sys.stdout.write(f"  {problem}\n")
    raise click.exceptions.Exit(1)


@click.command("prove")
@click.argument("seq", type=click.IntRange(min=1))
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Prove against the tree of this many events (default: the whole log).")
@with_store
async def prove_cmd(store: EventStore, *, seq: int, size: int | None) -> None:
    """The inclusion proof of event SEQ as JSON (hashes in base64): it verifies against
    the root of the checkpoint of the same tree size."""
    proof = await store.prove(seq, size)
    sys.stdout.write(to_json(proof).decode() + "\n")


COMMANDS = (checkpoint_cmd, verify_cmd, prove_cmd)
