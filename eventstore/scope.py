"""Who an LLM call belongs to, set for a block of code rather than passed to every call.

    with store.conversation("c1", user_id="u1", channel="web", tags=["beta"]):
        client.chat.completions.create(...)        # recorded under c1 / u1, tagged beta

    with store.trace("run-42", agent="planner") as run:
        run.add_tag("nightly")
        with run.step("search"):
            client.chat.completions.create(...)    # trace run-42, parent step "search"

The attribution lives in a ContextVar holding the chain of scopes entered, so it follows
the code that set it: each asyncio task gets a copy of its creator's context,
`asyncio.to_thread` carries it into the worker thread, and concurrent requests in one
server never see each other's ids. A bare `threading.Thread` starts with an empty context
(wrap its target in `contextvars.copy_context().run` to carry it over). A scope's
`set_metadata` / `add_tag` change what every call recorded inside it from then on carries,
in any task that entered it.

Tags are a list of strings in `metadata["tags"]`; nested scopes add theirs to the outer
ones. A trace puts `trace_id` and `parent_step_id` (its innermost step, the trace itself
at the top) in the metadata of each call recorded inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from .events import new_event_id

if TYPE_CHECKING:
    from .events import RecordedEvent
    from .store import EventStore

__all__ = [
    "Attribution",
    "ConversationScope",
    "MetadataScope",
    "TraceScope",
    "current_attribution",
    "merge_metadata",
    "scoped",
]

TAGS = "tags"


def check_tags(tags: Any, where: str) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValueError(f"{where}: tags must be a list of strings, got {tags!r}")
    out = list(tags)
    if not all(isinstance(t, str) and t for t in out):
        raise ValueError(f"{where}: tags must be non-empty strings, got {out!r}")
    return out


def merge_metadata(outer: Mapping[str, Any], inner: Mapping[str, Any]) -> dict[str, Any]:
    """`inner` over `outer`, except tags, which add up (in order, each once)."""
    merged = {**outer, **inner}
    outer_tags, inner_tags = outer.get(TAGS), inner.get(TAGS)
    if isinstance(outer_tags, list) and isinstance(inner_tags, list):
        merged[TAGS] = list(dict.fromkeys([*outer_tags, *inner_tags]))
    return merged


class MetadataScope:
    """A block of code whose recorded calls carry this metadata (and tags); the base of
    the conversation and trace scopes. Use with `with` or `async with`."""

    def __init__(self, *, tags: Iterable[str] = (), **metadata: Any) -> None:
        self.metadata: dict[str, Any] = dict(metadata)
        self.tags: list[str] = check_tags(tags, type(self).__name__)
        # A stack, so one scope object can be entered again while it is active.
        self._tokens: list[Token[Attribution]] = []

    conversation_id: str | None = None
    user_id: str | None = None

    def set_metadata(self, **metadata: Any) -> None:
        """Add metadata to every call recorded inside this scope from now on."""
        if TAGS in metadata:
            raise ValueError("set_metadata(): use add_tag() for tags")
        self.metadata.update(metadata)

    def add_tag(self, *tags: str) -> None:
        """Tag every call recorded inside this scope from now on."""
        for tag in check_tags(tags, "add_tag()"):
            if tag not in self.tags:
                self.tags.append(tag)

    def own_metadata(self) -> dict[str, Any]:
        """What this scope adds to a call's metadata."""
        return {**self.metadata, TAGS: list(self.tags)} if self.tags else dict(self.metadata)

    def __enter__(self) -> Self:
        outer = _current.get()
        self._tokens.append(_current.set(Attribution((*outer.scopes, self))))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


@dataclass(frozen=True, slots=True)
class Attribution:
    """The scopes in force, outermost first, and what they add up to."""

    scopes: tuple[MetadataScope, ...] = ()

    @property
    def conversation_id(self) -> str | None:
        return next((s.conversation_id for s in reversed(self.scopes)
                     if s.conversation_id is not None), None)

    @property
    def user_id(self) -> str | None:
        # a nested scope without a user keeps the outer one (a new conversation of the
        # same person)
        return next((s.user_id for s in reversed(self.scopes) if s.user_id is not None), None)

    @property
    def metadata(self) -> MappingProxyType[str, Any]:
        merged: dict[str, Any] = {}
        for scope in self.scopes:
            merged = merge_metadata(merged, scope.own_metadata())
        return MappingProxyType(merged)

    @property
    def conversation(self) -> ConversationScope | None:
        return next((s for s in reversed(self.scopes) if isinstance(s, ConversationScope)),
                    None)


_EMPTY = Attribution()
_current: ContextVar[Attribution] = ContextVar("eventstore_attribution", default=_EMPTY)


def current_attribution() -> Attribution:
    """The attribution in force here (all None outside any scope)."""
    return _current.get()


def scoped(conversation_id: str | None, user_id: str | None,
           metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None, dict[str, Any]]:
    """A call's ids and metadata with what the scopes in force add: ids given win over
    the scope's, metadata given wins over the scope's, tags add up."""
    scope = _current.get()
    if not scope.scopes:
        return conversation_id, user_id, dict(metadata or {})
    return (conversation_id if conversation_id is not None else scope.conversation_id,
            user_id if user_id is not None else scope.user_id,
            merge_metadata(scope.metadata, metadata or {}))


def note_call(event: RecordedEvent) -> None:
    """Remember a call recorded here as the last call of the innermost conversation scope
    (what its thumbs_up() rates)."""
    conversation = _current.get().conversation
    if conversation is not None and event.conversation_id == conversation.conversation_id:
        conversation.last_call_id = event.id


class ConversationScope(MetadataScope):
    """Sets the conversation (and user) of the calls made inside; restores it on exit.

    Nested scopes override the outer one; a nested scope without a user_id keeps the
    outer user, and metadata is merged, the inner keys winning (tags add up).
    """

    def __init__(self, conversation_id: str, user_id: str | None = None, *,
                 store: EventStore | None = None, tags: Iterable[str] = (),
                 **metadata: Any) -> None:
        if not isinstance(conversation_id, str) or not conversation_id:
            raise ValueError("conversation() needs a non-empty conversation_id string")
        if user_id is not None and not isinstance(user_id, str):
            raise ValueError("user_id must be a string or None")
        super().__init__(tags=tags, **metadata)
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.store = store
        self.last_call_id: str | None = None

    def _store(self) -> EventStore:
        if self.store is None:
            raise ValueError("this scope was not made by a store: use store.conversation()")
        return self.store

    async def feedback(self, comment: str | None = None, *,
                       rating: float | None = None) -> RecordedEvent:
        """Feedback on the conversation's last call (a comment, a rating or both)."""
        store = self._store()
        conversation_id = self.conversation_id
        assert conversation_id is not None  # a conversation scope always has one
        call_id = self.last_call_id or await store.last_call_id(conversation_id)
        return await store.feedback(rating, comment, call_id=call_id,
                                    conversation_id=conversation_id,
                                    user_id=current_attribution().user_id or self.user_id)

    async def thumbs_up(self, comment: str | None = None) -> RecordedEvent:
        """Rate the conversation's last call 1 (good)."""
        return await self.feedback(comment, rating=1)

    async def thumbs_down(self, comment: str | None = None) -> RecordedEvent:
        """Rate the conversation's last call 0 (bad)."""
        return await self.feedback(comment, rating=0)


class TraceScope(MetadataScope):
    """A run (an agent's task, a pipeline): every call recorded inside carries `trace_id`
    and `parent_step_id`; `step(name)` opens a nested step. RunSummaries sums them up."""

    def __init__(self, trace_id: str, *, tags: Iterable[str] = (),
                 parent_step_id: str | None = None, step_name: str | None = None,
                 **metadata: Any) -> None:
        if not isinstance(trace_id, str) or not trace_id:
            raise ValueError("trace() needs a non-empty trace_id string")
        super().__init__(tags=tags, **metadata)
        self.trace_id = trace_id
        self.step_id = trace_id if step_name is None else f"{trace_id}/{new_event_id()}"
        self.step_name = step_name
        self.parent_step_id = parent_step_id

    def step(self, name: str, *, tags: Iterable[str] = (), **metadata: Any) -> TraceScope:
        """A step of this trace: calls inside it have it as their parent step."""
        if not isinstance(name, str) or not name:
            raise ValueError("step() needs a non-empty name")
        return TraceScope(self.trace_id, tags=tags, parent_step_id=self.step_id,
                          step_name=name, **metadata)

    def own_metadata(self) -> dict[str, Any]:
        own = super().own_metadata()
        own["trace_id"] = self.trace_id
        own["parent_step_id"] = self.step_id
        if self.step_name is not None:
            own["step_name"] = self.step_name
        return own


def check_store_metadata(metadata: Any) -> dict[str, Any]:
    """The store-wide metadata option: a dict with string keys (tags a list of strings)."""
    if metadata is None:
        return {}
    from .errors import InvalidEventError

    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidEventError("metadata= must be a dict with string keys")
    out = dict(metadata)
    if TAGS in out:
        try:
            out[TAGS] = check_tags(out[TAGS], "metadata=")
        except ValueError as exc:
            raise InvalidEventError(str(exc)) from None
    return out
