"""killstream: EVE Online killmails from zKillboard's live feed into PostgreSQL."""

__version__ = "0.1.0"
