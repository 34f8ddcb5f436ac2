"""Projections: answers folded from the log, always rebuildable by replaying it."""

from .base import Projection, SnapshotError, State, StructProjection
from .costs import ConversationCosts, CostDimension, TokenCounts
from .guardrails import GuardrailViolations, Violation
from .latency import LatencyStats
from .memory import MemoryTrims
from .prompts import USER_FEEDBACK, PromptVersions, PromptVersionStats

__all__ = [
    "USER_FEEDBACK",
    "ConversationCosts",
    "CostDimension",
    "GuardrailViolations",
    "LatencyStats",
    "MemoryTrims",
    "Projection",
    "PromptVersionStats",
    "PromptVersions",
    "SnapshotError",
    "State",
    "StructProjection",
    "TokenCounts",
    "Violation",
]
