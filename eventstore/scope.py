"""Who an LLM call belongs to, set for a block of code rather than passed to every call.

    with store.conversation("c1", user_id="u1", channel="web"):
        client.chat.completions.create(...)        # recorded under c1 / u1

The attribution lives in a ContextVar, so it follows the code that set it: each asyncio
task gets a copy of its creator's context, `asyncio.to_thread` carries it into the worker
thread, and concurrent requests in one server never see each other's ids. A bare
`threading.Thread` starts with an empty context (wrap its target in
`contextvars.copy_context().run` to carry it over).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Self

__all__ = ["Attribution", "ConversationScope", "current_attribution"]


@dataclass(frozen=True, slots=True)
class Attribution:
    conversation_id: str | None = None
    user_id: str | None = None
    metadata: MappingProxyType[str, Any] = field(
        default_factory=lambda: MappingProxyType({})
    )


_EMPTY = Attribution()
_current: ContextVar[Attribution] = ContextVar("eventstore_attribution", default=_EMPTY)


def current_attribution() -> Attribution:
    """The attribution in force here (all None outside any `conversation(...)` block)."""
    return _current.get()


class ConversationScope:
    """Sets the attribution for the code inside `with` / `async with`; restores it on exit.

    Nested scopes override the outer one; a nested scope without a user_id keeps the
    outer user (a new conversation of the same person), and metadata is merged, the
    inner keys winning.
    """

    def __init__(self, conversation_id: str, user_id: str | None = None,
                 **metadata: Any) -> None:
        if not isinstance(conversation_id, str) or not conversation_id:
            raise ValueError("conversation() needs a non-empty conversation_id string")
        if user_id is not None and not isinstance(user_id, str):
            raise ValueError("user_id must be a string or None")
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.metadata = metadata
        # A stack, so one scope object can be entered again while it is active.
        self._tokens: list[Token[Attribution]] = []

    def __enter__(self) -> Self:
        outer = _current.get()
        self._tokens.append(_current.set(Attribution(
            conversation_id=self.conversation_id,
            user_id=self.user_id if self.user_id is not None else outer.user_id,
            metadata=MappingProxyType({**outer.metadata, **self.metadata}),
        )))
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
