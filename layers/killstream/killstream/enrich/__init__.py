"""The enricher: names from ESI for every id in the stored killmails (characters, corporations,
alliances, factions, solar systems with their constellations and regions, types with their
groups and categories), into the names tables the `killmail_summary` view joins."""
