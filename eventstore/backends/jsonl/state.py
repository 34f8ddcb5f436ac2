"""What a jsonl directory keeps beside its log: store metadata, checkpoints, data keys.

None of it is an event, and some of it must change (a checkpoint moves on, a forgotten
user's key is overwritten), so each is a small JSON file replaced whole: written to a
temporary file and renamed over the old one, so a reader sees the old or the new content
and a crash leaves one of them. Changes that must not race another process (metadata set
once, keys) are made under the directory lock.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from ...clock import from_micros, to_micros, utcnow
from ...errors import BackendError
from ..base import Checkpoint, KeyRecord, newest_keys
from .lock import DirectoryLock

META_FILE = "meta.json"
KEYS_FILE = "keys.json"
CHECKPOINTS_DIR = "checkpoints"


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _unb64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


class SideFiles:
    def __init__(self, directory: Path, lock: DirectoryLock, *, sync: bool) -> None:
        self.directory = directory
        self._lock = lock
        self._sync = sync

    def _read(self, path: Path) -> Any:
        try:
            return msgspec.json.decode(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            raise BackendError(f"cannot read {path}: {exc}") from exc

    def _replace(self, path: Path, value: Any) -> None:
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as out:
                out.write(msgspec.json.encode(value))
                if self._sync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise BackendError(f"cannot write {path}: {exc}") from exc

    # --- metadata ------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        meta = self._read(self.directory / META_FILE)
        return meta if isinstance(meta, dict) else {}

    def get_meta(self, key: str) -> bytes | None:
        return _unb64(self._meta().get(key))

    def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        with self._lock.held():
            meta = self._meta()
            if key not in meta:
                meta[key] = base64.b64encode(value).decode()
                self._replace(self.directory / META_FILE, meta)
            stored = _unb64(meta[key])
            assert stored is not None
            return stored

    # --- checkpoints ---------------------------------------------------------------------

    def _checkpoint_path(self, name: str) -> Path:
        # any string may name a checkpoint: its file name is an encoding of it
        encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        return self.directory / CHECKPOINTS_DIR / f"{encoded or '_'}.json"

    @staticmethod
    def _checkpoint(doc: Any) -> Checkpoint:
        return Checkpoint(name=doc["name"], position=int(doc["position"]),
                          state=_unb64(doc["state"]),
                          updated_at=from_micros(int(doc["updated_at"])))

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        doc = self._read(self._checkpoint_path(name))
        return None if doc is None else self._checkpoint(doc)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        (self.directory / CHECKPOINTS_DIR).mkdir(exist_ok=True)
        updated = checkpoint.updated_at or utcnow()
        self._replace(self._checkpoint_path(checkpoint.name), {
            "name": checkpoint.name, "position": checkpoint.position,
            "state": _b64(checkpoint.state), "updated_at": to_micros(updated)})

    def list_checkpoints(self) -> list[Checkpoint]:
        folder = self.directory / CHECKPOINTS_DIR
        if not folder.exists():
            return []
        found = []
        for path in folder.glob("*.json"):
            doc = self._read(path)
            if doc is not None:
                found.append(self._checkpoint(doc))
        return sorted(found, key=lambda c: c.name)

    def delete_checkpoint(self, name: str) -> None:
        self._checkpoint_path(name).unlink(missing_ok=True)

    # --- data keys -----------------------------------------------------------------------

    def _keys(self) -> list[KeyRecord]:
        rows = self._read(self.directory / KEYS_FILE) or []
        return [KeyRecord(user_id=u, generation=int(g), wrapped=_unb64(w),
                          created_at=from_micros(int(c)),
                          forgotten_at=from_micros(int(f)) if f is not None else None)
                for u, g, w, c, f in rows]

    def _write_keys(self, keys: list[KeyRecord]) -> None:
        self._replace(self.directory / KEYS_FILE, [
            [k.user_id, k.generation, _b64(k.wrapped), to_micros(k.created_at),
             to_micros(k.forgotten_at) if k.forgotten_at is not None else None]
            for k in keys])

    def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        wanted = set(user_ids)
        return newest_keys(k for k in self._keys() if k.user_id in wanted)

    def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        with self._lock.held():
            keys = self._keys()
            for key in keys:
                if key.user_id == user_id and key.generation == generation:
                    return key  # another store made it first: the winner's key
            made = KeyRecord(user_id=user_id, generation=generation, wrapped=wrapped,
                             created_at=utcnow())
            self._write_keys([*keys, made])
            return made

    def key_owners(self, prefix: str | None) -> list[str]:
        return sorted({k.user_id for k in self._keys() if k.wrapped is not None
                       and (not prefix or k.user_id.startswith(prefix))})

    def destroy_keys(self, user_id: str) -> KeyRecord:
        now = utcnow()
        with self._lock.held():
            keys = self._keys()
            mine = [k for k in keys if k.user_id == user_id]
            if not mine:
                keys.append(KeyRecord(user_id=user_id, generation=1, wrapped=None,
                                      created_at=now, forgotten_at=now))
            keys = [msgspec.structs.replace(k, wrapped=None, forgotten_at=now)
                    if k.user_id == user_id and k.wrapped is not None else k for k in keys]
            # the old file, wrapped key included, is unlinked by the rename
            self._write_keys(keys)
            return max((k for k in keys if k.user_id == user_id), key=lambda k: k.generation)
