"""Durable subscriptions and the guardian that keeps them attached."""

from .guardian import Guardian
from .subscription import Handler, Status, Subscription

__all__ = ["Guardian", "Handler", "Status", "Subscription"]
