"""Feedback on a model call: a `user_feedback` event that names the call it rates.

Its data holds `rating` (a number or None), `comment` (text or None) and `call_id` (the
id of the rated call's `llm_call` event, or of its `cost_recorded` event when it was
recorded with record_cost; None when it rates a conversation as a whole). A conversation
scope's `thumbs_up()` / `thumbs_down()` / `feedback(text)` rate the scope's last call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import InvalidEventError
from .events import COST_RECORDED, Event
from .projections.prompts import USER_FEEDBACK
from .projections.runs import LLM_CALL

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["CALL_TYPES", "feedback_event", "find_last_call"]

CALL_TYPES = frozenset({LLM_CALL, COST_RECORDED})


def feedback_event(rating: Any, comment: Any, *, call_id: Any, conversation_id: str | None,
                   user_id: str | None, metadata: dict[str, Any]) -> Event:
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int | float)
                               or not math.isfinite(rating)):
        raise InvalidEventError(f"feedback rating must be a finite number or None, got "
                                f"{rating!r}")
    if comment is not None and not isinstance(comment, str):
        raise InvalidEventError(f"feedback comment must be a string or None, got "
                                f"{type(comment).__name__}")
    if rating is None and not comment:
        raise InvalidEventError("feedback needs a rating, a comment or both")
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        raise InvalidEventError("call_id must be the id of a recorded call (a string)")
    return Event(type=USER_FEEDBACK, data={"rating": rating, "comment": comment,
                                           "call_id": call_id},
                 conversation_id=conversation_id, user_id=user_id, metadata=metadata)


async def find_last_call(store: EventStore, conversation_id: str) -> str | None:
    """The id of the conversation's last recorded call (its llm_call event, or the
    cost_recorded event of a call recorded with record_cost)."""
    last: str | None = None
    async for event in store.read(conversation_id=conversation_id, type=CALL_TYPES):
        call_id = event.data.get("call_id") if event.type == COST_RECORDED else None
        last = call_id if isinstance(call_id, str) else event.id
    return last
