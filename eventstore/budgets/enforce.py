"""Refusing a model call before it is sent, when a budget it falls under is exhausted
(the integrations' `enforce_budgets=True`).

The refusal is recorded too, as a `budget_refused` event carrying the call's ids, provider,
model and the exhausted budgets, so an auditor sees what was not sent and why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import EventStoreError
from ..events import Event
from .alerts import BUDGET_REFUSED
from .watcher import check_budgets

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["refuse_if_exhausted", "refuse_if_exhausted_sync"]


def _tags(metadata: Mapping[str, Any]) -> list[str]:
    tags = metadata.get("tags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


async def refuse_if_exhausted(store: EventStore, *, provider: str, model: str | None,
                              user_id: str | None, conversation_id: str | None,
                              metadata: Mapping[str, Any]) -> None:
    """Raise BudgetExceededError, after recording a `budget_refused` event, if a budget
    of `store` that a call with these ids and tags falls under is exhausted."""
    statuses = await store.budget_status(user_id=user_id, conversation_id=conversation_id,
                                         tags=_tags(metadata))
    exhausted = [s for s in statuses if s.exhausted]
    if not exhausted:
        return
    await store.append(Event(
        type=BUDGET_REFUSED, user_id=user_id, conversation_id=conversation_id,
        metadata=dict(metadata),
        data={"provider": provider, "model": model, "budgets": [
            {"budget": s.budget.label, "per": s.budget.per, "scope": s.scope,
             "window": s.window.label, "spent": str(s.spent), "limit": str(s.limit),
             "unpriced_calls": s.unpriced_calls} for s in exhausted]}))
    check_budgets(exhausted)


def refuse_if_exhausted_sync(store: EventStore, *, timeout: float, provider: str,
                             model: str | None, user_id: str | None,
                             conversation_id: str | None,
                             metadata: Mapping[str, Any]) -> None:
    """The same from sync code off the store's loop (it waits at most `timeout` seconds).

    On the loop's own thread the answer cannot be waited for without deadlocking the
    loop, and a budget that cannot be checked must not let the call through: that raises
    an EventStoreError saying so."""
    loop = store.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise EventStoreError(
            "enforce_budgets=True cannot check budgets for a sync client called on the "
            "store's event-loop thread (waiting would block the loop): use the async client "
            "there, or call the sync client from a worker thread (asyncio.to_thread)")
    future = asyncio.run_coroutine_threadsafe(refuse_if_exhausted(
        store, provider=provider, model=model, user_id=user_id,
        conversation_id=conversation_id, metadata=metadata), loop)
    try:
        future.result(timeout=timeout)
    except TimeoutError:
        future.cancel()
        raise EventStoreError(
            f"enforce_budgets=True could not check budgets within {timeout}s (is the store's "
            "event loop blocked?); the call was not sent") from None
