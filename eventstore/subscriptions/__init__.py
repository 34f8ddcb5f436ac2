"""Durable subscriptions, the registry that feeds them and the guardian that keeps them
attached. This package never imports the store: it works through a Host (host.py)."""

from .guardian import Guardian
from .host import Host
from .registry import Registry
from .subscription import Handler, Status, Subscription

__all__ = ["Guardian", "Handler", "Host", "Registry", "Status", "Subscription"]
