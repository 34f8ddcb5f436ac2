"""Redact hooks: a chain of callables that rewrite an event before it is persisted.

A hook takes an Event and returns an Event (sync or async), e.g.
`msgspec.structs.replace(ev, data={...})`. The chain fails closed: if a hook raises, or
returns anything but an Event with the same id, nothing is written and the caller gets a
RedactionError. The redacted form is what is stored and what every subscriber sees.

`PIIRedactor` (eventstore.privacy.pii) is a ready hook for e-mail addresses, phone numbers,
payment cards, IBANs, IP addresses and secrets.

Whatever a hook returns is validated again before it is stored, unless every hook of the
chain declares `copies_on_write = True` (it never changes an event in place, only returns
a changed copy) and the chain handed back the very event it was given: that event was
validated before the hooks ran. PIIRedactor declares it.

A sync hook may also have `prefers_thread(event) -> bool`: when it answers True the hook
runs on a worker thread (anyio.to_thread), so a slow hook on a large event never stalls
the event loop. PIIRedactor answers True for events with more than `thread_above`
characters of text.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import anyio.to_thread

from ..errors import RedactionError
from ..events import Event

__all__ = ["RedactHook", "copies_on_write", "run_hooks"]

RedactHook: TypeAlias = Callable[[Event], Event | Awaitable[Event]]


def copies_on_write(hooks: Sequence[RedactHook]) -> bool:
    """True when the chain returning its input unchanged means the event is unchanged."""
    return all(getattr(hook, "copies_on_write", False) is True for hook in hooks)


def _name(hook: RedactHook) -> str:
    return getattr(hook, "__qualname__", None) or type(hook).__qualname__


async def run_hooks(hooks: Sequence[RedactHook], event: Event) -> Event:
    for hook in hooks:
        try:
            # A sync hook may say an event is too big to handle on the event loop
            # (PIIRedactor on a long paste): it then runs on a worker thread, and every
            # other task of the loop carries on meanwhile.
            offload = getattr(hook, "prefers_thread", None)
            if offload is not None and offload(event):
                result = await anyio.to_thread.run_sync(hook, event)
            else:
                result = hook(event)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise RedactionError(
                f"redact hook {_name(hook)} raised {exc!r} on event {event.id} "
                f"(type {event.type!r}); nothing was written. Fix the hook, then append again."
            ) from exc
        if not isinstance(result, Event):
            raise RedactionError(
                f"redact hook {_name(hook)} returned {type(result).__name__}, not an Event; "
                "a hook must return the event or a changed copy "
                "(msgspec.structs.replace(ev, data=...)). Nothing was written."
            )
        if result.id != event.id:
            raise RedactionError(
                f"redact hook {_name(hook)} changed the event id; ids are idempotency keys "
                "and must pass through unchanged. Nothing was written."
            )
        event = result
    return event
