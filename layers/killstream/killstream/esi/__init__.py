"""ESI, CCP's API (docs/protocols.md, "ESI"): one client core that keeps to ESI's limits (client.py),
and the routes built on it: the killmail route the fetcher uses (killmails.py) and the universe
routes the enricher uses (universe.py)."""
