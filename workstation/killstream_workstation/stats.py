"""`killstream stats`: what the database holds, with names where the enricher has them."""

from __future__ import annotations

from killstream_workstation.local.console import isk, plural
from killstream_workstation.names import describe

_QUERIES = {
    "counts": "SELECT (SELECT count(*) FROM killmails), (SELECT count(*) FROM attackers), (SELECT count(*) FROM items)",
    "newest": "SELECT max(killmail_time), max(stored_at) FROM killmails",
    "newest_kill": """
        SELECT killmail_id, victim_ship_type_id, victim_character_id, victim_corporation_id, solar_system_id,
               victim_ship_type_name, victim_character_name, victim_corporation_name, solar_system_name, zkb_total_value
        FROM killmail_summary ORDER BY killmail_time DESC LIMIT 1""",
    # Killmails stored in the last hour: how long after the kill did they land here?
    "lag": """
        SELECT count(*),
               percentile_cont(0.5)  WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - killmail_time)),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - killmail_time)),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - killmail_time))
        FROM killmails
        WHERE stored_at > now() - interval '1 hour' AND killmail_time > now() - interval '1 day'""",
    "systems": """
        SELECT k.solar_system_id, s.solar_system_name, s.region_name, s.security_status,
               count(*), sum(k.zkb_total_value)
        FROM killmails k LEFT JOIN solar_systems s USING (solar_system_id)
        WHERE k.killmail_time > (SELECT max(killmail_time) FROM killmails) - interval '1 day'
        GROUP BY 1, 2, 3, 4 ORDER BY count(*) DESC, k.solar_system_id LIMIT 5""",
    "names": """
        SELECT (SELECT count(*) FROM entity_names WHERE error IS NULL),
               (SELECT count(*) FROM solar_systems WHERE error IS NULL AND region_name IS NOT NULL),
               (SELECT count(*) FROM item_types WHERE error IS NULL AND category_name IS NOT NULL),
               (SELECT count(*) FROM entity_names WHERE error IS NOT NULL)
                 + (SELECT count(*) FROM solar_systems WHERE error IS NOT NULL)
                 + (SELECT count(*) FROM item_types WHERE error IS NOT NULL),
               (SELECT stored_at FROM enrichment_watermark)""",
    # Killmail events still to go to the bus (sql/005_events.sql): normally none for long.
    "events": """
        SELECT count(*), min(stored_at) FROM killmails
        WHERE published_version IS NULL OR published_version < zkb_version""",
}


UNSETTLED = "not yet (the watermark passes a killmail 5 min after it is stored)"


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.1f}s"


def _system(system_id, name, region, security) -> str:
    if name is None:
        return f"system {system_id}"
    return f"{name} ({region or 'region ?'}, {security:.1f})" if security is not None else name


def database_report(conn) -> str:
    with conn, conn.cursor() as cur:
        results = {}
        for name, sql in _QUERIES.items():
            cur.execute(sql)
            results[name] = cur.fetchall()
    killmails, attackers, items = results["counts"][0]
    newest_kill, newest_store = results["newest"][0]
    lag_count, p50, p95, p99 = results["lag"][0]
    entities, systems, types, unresolvable, watermark = results["names"][0]
    unpublished, oldest_unpublished = results["events"][0]
    lines = [
        "📊 killstream database",
        f"   Killmails: {killmails:,}   Attackers: {attackers:,}   Items: {items:,}",
        f"   Newest killmail: {newest_kill.isoformat() if newest_kill else 'none'}"
        f"   (last stored {newest_store.isoformat() if newest_store else 'never'})",
    ]
    for killmail_id, ship_id, character_id, corporation_id, system_id, *names, value in results["newest_kill"]:
        place = describe(ship_id, character_id, corporation_id, system_id, (names[0], names[1], names[2], names[3]))
        lines.append(f"     {killmail_id} — {place}, {isk(value)}")
    lines += [
        f"   Ingest lag, last hour ({plural(lag_count, 'live killmail')}): "
        f"p50 {_seconds(p50)}  p95 {_seconds(p95)}  p99 {_seconds(p99)}",
        f"   Names: {entities:,} characters/corporations/alliances/factions, {systems:,} systems, {types:,} types; "
        f"{unresolvable:,} unresolvable",
        f"   Enriched through: {watermark.isoformat() if watermark else UNSETTLED}",
        f"   Events waiting for the bus: {unpublished:,}"
        + (f" (oldest stored {oldest_unpublished.isoformat()})" if oldest_unpublished else ""),
        "   Busiest systems (24 h before the newest killmail):",
    ]
    lines += [
        f"     {_system(system_id, name, region, security)}: {plural(count, 'kill')}, {isk(value)}"
        for system_id, name, region, security, count, value in results["systems"]
    ] or ["     none"]
    return "\n".join(lines)
