"""Backfill: any range of UTC days from the public archives (EVE Ref, zKillboard) into PostgreSQL."""
