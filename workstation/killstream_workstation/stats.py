"""`killstream stats`: what the database holds."""

from __future__ import annotations

from killstream_workstation.local.console import isk, plural

_QUERIES = {
    "counts": "SELECT (SELECT count(*) FROM killmails), (SELECT count(*) FROM attackers), (SELECT count(*) FROM items)",
    "newest": "SELECT max(killmail_time), max(stored_at) FROM killmails",
    # Killmails stored in the last hour: how long after the kill did they land here?
    "lag": """
        SELECT count(*),
               percentile_cont(0.5)  WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - killmail_time)),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - killmail_time)),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - killmail_time))
        FROM killmails
        WHERE stored_at > now() - interval '1 hour' AND killmail_time > now() - interval '1 day'""",
    "systems": """
        SELECT solar_system_id, count(*), sum(zkb_total_value)
        FROM killmails WHERE killmail_time > (SELECT max(killmail_time) FROM killmails) - interval '1 day'
        GROUP BY solar_system_id ORDER BY count(*) DESC, solar_system_id LIMIT 5""",
}


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.1f}s"


def database_report(conn) -> str:
    with conn, conn.cursor() as cur:
        results = {}
        for name, sql in _QUERIES.items():
            cur.execute(sql)
            results[name] = cur.fetchall()
    killmails, attackers, items = results["counts"][0]
    newest_kill, newest_store = results["newest"][0]
    lag_count, p50, p95, p99 = results["lag"][0]
    lines = [
        "📊 killstream database",
        f"   Killmails: {killmails:,}   Attackers: {attackers:,}   Items: {items:,}",
        f"   Newest killmail: {newest_kill.isoformat() if newest_kill else 'none'}"
        f"   (last stored {newest_store.isoformat() if newest_store else 'never'})",
        f"   Ingest lag, last hour ({plural(lag_count, 'live killmail')}): "
        f"p50 {_seconds(p50)}  p95 {_seconds(p95)}  p99 {_seconds(p99)}",
        "   Busiest systems (24 h before the newest killmail):",
    ]
    lines += [
        f"     {system}: {plural(count, 'kill')}, {isk(value)}" for system, count, value in results["systems"]
    ] or ["     none"]
    return "\n".join(lines)
