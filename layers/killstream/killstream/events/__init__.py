"""Killmail events on EventBridge: the versioned detail contract (detail.py, docs/events.md), the
bus's PutEvents (bus.py) and the fetcher's publication after each write (publisher.py)."""
