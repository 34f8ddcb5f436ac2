"""Projections: answers folded from the log, always rebuildable by replaying it."""

from .base import Projection, SnapshotError, State, StructProjection
from .costs import ConversationCosts, CostDimension, TokenCounts
from .guardrails import GuardrailViolations, Violation
from .latency import LatencyStats
from .memory import MemoryTrims
from .prompts import USER_FEEDBACK, PromptVersions, PromptVersionStats
from .runs import RunSummaries, RunSummary

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
    "RunSummaries",
    "RunSummary",
    "SnapshotError",
    "State",
    "StructProjection",
    "TokenCounts",
    "Violation",
]
