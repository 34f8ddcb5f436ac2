"""Record LLM calls made through the official SDKs, and export the log to polars.

    from eventstore.integrations import instrument_openai   # also _anthropic, _gemini
    client = instrument_openai(OpenAI(), store)
    with store.conversation("c1", user_id="u1"):
        client.chat.completions.create(model="gpt-4o", messages=[...])

The SDKs stay optional: importing this package imports none of them; each
`instrument_*` function imports its SDK when called. LiteLLM's callback is
`eventstore.integrations.litellm.EventStoreLogger`. `stats` counts calls and every
record that could not be written (recording never fails the caller's request).
"""

from ._recording import IntegrationStats, stats
from .anthropic import instrument_anthropic
from .context import Attribution, ConversationScope, current_attribution
from .gemini import instrument_gemini
from .openai import instrument_openai

__all__ = [
    "Attribution",
    "ConversationScope",
    "IntegrationStats",
    "current_attribution",
    "instrument_anthropic",
    "instrument_gemini",
    "instrument_openai",
    "stats",
]
