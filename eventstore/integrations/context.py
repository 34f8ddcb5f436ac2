"""Public import path of the attribution scope, which lives in `eventstore.scope` (the
store and the integrations both read it; the core never imports its adapters)."""

from ..scope import Attribution, ConversationScope, current_attribution

__all__ = ["Attribution", "ConversationScope", "current_attribution"]
