"""The jsonl backend: JSON-lines files, one per UTC day, shared by several processes."""

from .backend import JsonlBackend

__all__ = ["JsonlBackend"]
