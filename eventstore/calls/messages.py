"""Each message of a conversation stored once; later calls reference it by its digest.

A chat API resends the whole conversation on every call, so storing every request whole
grows quadratically with the conversation. Here every message (and system prompt) of a
request becomes a `message_sent` event the first time the conversation sends it, keyed
by a digest of its exact JSON; the call event lists the digests in order. Calls without
a conversation id share nothing: their messages are stored with the call.

`message_sent` keeps the contract's `role` and `content` (the text, for transcripts and
redaction) and the rest of the exact item, so `item_of(data)` gives back the message byte
for byte as the provider received it:
- layout "text":    the message is a plain string (a system prompt, a string input);
- layout "content": a dict whose `content` is a string, stored without that key;
- layout "item":    any other shape (content parts, tool calls, Responses items), whole.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ..events import Event
from ..query import Query
from ..reads import LogReader
from .flavors import role_of

__all__ = [
    "Conversation",
    "MessageIndex",
    "compact_refs",
    "digest_of_item",
    "item_of",
    "message_data",
    "resolve_refs",
    "stored_digest",
    "text_of",
]

_encoder = msgspec.json.Encoder(order="sorted")
# Conversations whose digests are kept in memory; older ones are read back from the log.
_CONVERSATIONS: Final = 10_000


def digest_of_item(item: Any) -> str:
    """The digest of a message: SHA-256 of its canonical JSON (keys sorted), 128 bits."""
    return hashlib.sha256(_encoder.encode(item)).hexdigest()[:32]


def stored_digest(event: Event) -> bytes:
    """The digest of the message a `message_sent` event stores (`digest_of_item` of it,
    as bytes): with no redact hook and no encryption, that of the message as sent."""
    return bytes.fromhex(digest_of_item(item_of(event.data)))


def text_of(content: Any) -> str:
    """The readable text of a message's content: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif isinstance(part.get("content"), str):  # tool_result blocks
                    parts.append(part["content"])
                elif isinstance(part.get("output"), str):
                    parts.append(part["output"])
        return "".join(parts)
    if isinstance(content, Mapping):
        for key in ("content", "output", "text", "parts"):
            if key in content:
                return text_of(content[key])
    return ""


def message_data(item: Any, field: str, digest: str, call_id: str) -> dict[str, Any]:
    """The `message_sent` payload that stores `item` (see the module docstring)."""
    data: dict[str, Any] = {"role": role_of(item, field), "hash": digest, "field": field,
                            "call_id": call_id}
    if isinstance(item, str):
        data.update(content=item, layout="text")
    elif isinstance(item, Mapping) and isinstance(item.get("content"), str):
        data.update(content=item["content"], layout="content",
                    item={k: v for k, v in item.items() if k != "content"})
    else:
        data.update(content=text_of(item), layout="item", item=item)
    return data


def item_of(data: Mapping[str, Any]) -> Any:
    """The exact message a `message_sent` payload of `message_data` stores."""
    layout = data.get("layout")
    if layout == "text":
        return data.get("content")
    if layout == "content":
        return {**data.get("item", {}), "content": data.get("content")}
    return data.get("item")


def resolve_refs(refs: Mapping[str, Any], earlier: Mapping[str, Mapping[str, Any]]
                 ) -> dict[str, Any]:
    """A call's message references with every list spelled out in digests: a list field
    stored as {"after": call_id, "add": [...]} extends that earlier call's list (`earlier`
    maps call ids to their resolved references). Raises KeyError for an unknown call."""
    out: dict[str, Any] = {}
    for field, ref in refs.items():
        if isinstance(ref, Mapping):
            out[field] = [*earlier[ref["after"]][field], *ref["add"]]
        else:
            out[field] = ref
    return out


def compact_refs(refs: Mapping[str, Any], last: tuple[str, Mapping[str, Any]] | None,
                 list_fields: set[str]) -> dict[str, Any]:
    """References as stored: a list that starts with the previous call's list of the same
    field is stored as that call plus what was added, so each call stores only its new
    digests and a conversation's storage stays linear in its length."""
    if last is None:
        return dict(refs)
    call_id, previous = last
    out: dict[str, Any] = {}
    for field, ref in refs.items():
        before = previous.get(field)
        if (field in list_fields and isinstance(before, list) and before
                and ref[:len(before)] == before):
            out[field] = {"after": call_id, "add": ref[len(before):]}
        else:
            out[field] = ref
    return out


class Conversation:
    """What the index knows of one conversation: its stored digests, and the resolved
    references of its last call (the base the next call's lists extend)."""

    __slots__ = ("digests", "last", "redacted")

    def __init__(self) -> None:
        self.digests: set[str] = set()
        self.last: tuple[str, dict[str, Any]] | None = None
        # digest of a message as sent -> digest of what the redact hooks leave of it
        self.redacted: dict[str, bytes] = {}


class MessageIndex:
    """Which digests each conversation has stored (in memory for recent conversations,
    read back from the log for the others), and one lock per conversation so concurrent
    calls of one conversation store a new message once."""

    def __init__(self, reader: LogReader, call_type: str) -> None:
        self._reader = reader
        self._call_type = call_type
        self._known: OrderedDict[str, Conversation] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            if len(self._locks) >= _CONVERSATIONS:
                for key in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[key]
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    async def conversation(self, conversation_id: str) -> Conversation:
        known = self._known.get(conversation_id)
        if known is not None:
            self._known.move_to_end(conversation_id)
            return known
        known = Conversation()
        resolved: dict[str, dict[str, Any]] = {}
        # By conversation alone, the types sorted out here: the backends answer that from
        # the conversation index, where a type filter as well made SQLite scan the log
        # (68 ms a conversation at 30k events, so O(log) for every new conversation).
        query = Query(conversation_id=conversation_id)
        async for event in self._reader.read(query):
            if event.type != "message_sent" and event.type != self._call_type:
                continue
            if event.type == self._call_type:
                try:
                    refs = resolve_refs(event.data.get("messages") or {}, resolved)
                except (KeyError, TypeError):
                    continue
                resolved[event.id] = refs
                known.last = (event.id, refs)
                continue
            digest = event.data.get("hash")
            if isinstance(digest, str):
                known.digests.add(digest)
        self._known[conversation_id] = known
        if len(self._known) > _CONVERSATIONS:
            self._known.popitem(last=False)
        return known
