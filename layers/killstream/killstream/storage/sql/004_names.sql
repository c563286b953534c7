-- Names for the ids in stored killmails, resolved from ESI by the enricher (killstream/enrich/).
-- Only ids that appear in stored killmails are here, never a crawl of ESI. Table, column and view
-- names are a contract, like the killmail tables'.
--
-- An id ESI cannot resolve is recorded too, so it is not asked for again on every run: its row
-- has `error` (why) and NULL names; `resolved_at` says when ESI was last asked, and the enricher
-- asks again only once that is long past (a week) and a new killmail still names the id.

-- Characters, corporations, alliances and factions: POST /universe/names/.
CREATE TABLE entity_names (
    id          bigint PRIMARY KEY,
    category    text,                              -- ESI's: character, corporation, alliance, faction
    name        text,
    resolved_at timestamptz NOT NULL DEFAULT now(),
    error       text,                              -- NULL when named; else why ESI could not name it
    CHECK ((error IS NULL) = (name IS NOT NULL AND category IS NOT NULL))
);

-- Solar systems with their constellation and region: GET /universe/systems/{id}/, then
-- /universe/constellations/{id}/ and /universe/regions/{id}/, each asked once per new id.
-- A row whose region_name is still NULL (and no error) is being completed.
CREATE TABLE solar_systems (
    solar_system_id    bigint PRIMARY KEY,
    solar_system_name  text,
    security_status    double precision,
    constellation_id   bigint,
    constellation_name text,
    region_id          bigint,
    region_name        text,
    resolved_at        timestamptz NOT NULL DEFAULT now(),
    error              text                        -- why the system, its constellation or region failed
);

-- Item types (ships, weapons, items) with their group and category: GET /universe/types/{id}/,
-- then /universe/groups/{id}/ and /universe/categories/{id}/, each asked once per new id.
-- A row whose category_name is still NULL (and no error) is being completed.
CREATE TABLE item_types (
    type_id       bigint PRIMARY KEY,
    type_name     text,
    group_id      bigint,
    group_name    text,                            -- e.g. Titan
    category_id   bigint,
    category_name text,                            -- e.g. Ship
    resolved_at   timestamptz NOT NULL DEFAULT now(),
    error         text                             -- why the type, its group or category failed
);

CREATE INDEX solar_systems_constellation_idx ON solar_systems (constellation_id);
CREATE INDEX solar_systems_region_idx        ON solar_systems (region_id);
CREATE INDEX item_types_group_idx            ON item_types (group_id);
CREATE INDEX item_types_category_idx         ON item_types (category_id);

-- How far the enricher has come: every killmail up to (stored_at, killmail_id) has had its ids
-- resolved (or recorded unresolvable). Its next run starts after it, so it never anti-joins all
-- of attackers and items; the index lets it find the killmails after the mark.
CREATE TABLE enrichment_watermark (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    stored_at   timestamptz NOT NULL,
    killmail_id bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX killmails_stored_at_idx ON killmails (stored_at, killmail_id);
-- The final blow of a killmail, one index entry per killmail (the view's lateral join).
CREATE INDEX attackers_final_blow_idx ON attackers (killmail_id) WHERE final_blow;

-- One row per killmail, with names where they are known (NULL until the enricher has them):
-- what a "recent kills" page needs in one SELECT. Filter on the killmail's own columns (time,
-- system, victim ids, value: indexed), or on the region (solar_systems is joined); the entity
-- names are looked up per row returned (scalar subqueries keep the join, and its planning, small).
CREATE VIEW killmail_summary AS
SELECT
    k.killmail_id,
    k.killmail_time,
    k.solar_system_id,
    s.solar_system_name,
    s.security_status,
    s.constellation_id,
    s.constellation_name,
    s.region_id,
    s.region_name,
    k.victim_character_id,
    (SELECT n.name FROM entity_names n WHERE n.id = k.victim_character_id) AS victim_character_name,
    k.victim_corporation_id,
    (SELECT n.name FROM entity_names n WHERE n.id = k.victim_corporation_id) AS victim_corporation_name,
    k.victim_alliance_id,
    (SELECT n.name FROM entity_names n WHERE n.id = k.victim_alliance_id) AS victim_alliance_name,
    k.victim_faction_id,
    (SELECT n.name FROM entity_names n WHERE n.id = k.victim_faction_id) AS victim_faction_name,
    k.victim_ship_type_id,
    t.type_name AS victim_ship_type_name,
    t.group_id AS victim_ship_group_id,
    t.group_name AS victim_ship_group_name,
    t.category_name AS victim_ship_category_name,
    k.victim_damage_taken,
    k.attacker_count,
    fb.character_id AS final_blow_character_id,
    (SELECT n.name FROM entity_names n WHERE n.id = fb.character_id) AS final_blow_character_name,
    fb.corporation_id AS final_blow_corporation_id,
    (SELECT n.name FROM entity_names n WHERE n.id = fb.corporation_id) AS final_blow_corporation_name,
    fb.alliance_id AS final_blow_alliance_id,
    (SELECT n.name FROM entity_names n WHERE n.id = fb.alliance_id) AS final_blow_alliance_name,
    fb.ship_type_id AS final_blow_ship_type_id,
    (SELECT f.type_name FROM item_types f WHERE f.type_id = fb.ship_type_id) AS final_blow_ship_type_name,
    k.zkb_total_value,
    k.zkb_points,
    k.zkb_npc,
    k.zkb_solo,
    k.zkb_awox,
    k.zkb_labels,
    'https://zkillboard.com/kill/' || k.killmail_id || '/' AS zkillboard_url
FROM killmails k
LEFT JOIN solar_systems s ON s.solar_system_id = k.solar_system_id
LEFT JOIN item_types t ON t.type_id = k.victim_ship_type_id
LEFT JOIN LATERAL (
    SELECT a.character_id, a.corporation_id, a.alliance_id, a.ship_type_id
    FROM attackers a
    WHERE a.killmail_id = k.killmail_id AND a.final_blow
    ORDER BY a.attacker_index
    LIMIT 1
) fb ON true;
