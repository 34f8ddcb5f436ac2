"""The `eventstore` command: one module per command group, `app` assembles them."""

from .app import main

__all__ = ["main"]
