-- Killmails from zKillboard's live feed. Every EVE id is bigint: ids exceed 32 bits.
-- Table and column names are a contract: dashboards and users query them.

CREATE TABLE killmails (
    killmail_id           bigint PRIMARY KEY,
    killmail_hash         text        NOT NULL,
    killmail_time         timestamptz NOT NULL,
    solar_system_id       bigint      NOT NULL,
    moon_id               bigint,
    war_id                bigint,
    victim_character_id   bigint,
    victim_corporation_id bigint,
    victim_alliance_id    bigint,
    victim_faction_id     bigint,
    victim_ship_type_id   bigint      NOT NULL,
    victim_damage_taken   bigint      NOT NULL,
    position_x            double precision,
    position_y            double precision,
    position_z            double precision,
    attacker_count        integer     NOT NULL,
    zkb_location_id       bigint,
    zkb_fitted_value      numeric,
    zkb_dropped_value     numeric,
    zkb_destroyed_value   numeric,
    zkb_total_value       numeric,
    zkb_points            integer,
    zkb_npc               boolean,
    zkb_solo              boolean,
    zkb_awox              boolean,
    zkb_labels            text[],
    esi                   jsonb       COMPRESSION lz4 NOT NULL,  -- the ESI document as received; lz4: several times cheaper to write than pglz
    source                text        NOT NULL,   -- r2z2, redisq, ...
    sequence_id           bigint,                 -- R2Z2 sequence of the zkb values stored
    received_at           timestamptz NOT NULL,   -- when the poller got the package
    stored_at             timestamptz NOT NULL DEFAULT now(),
    zkb_updated_at        timestamptz             -- set when a re-published zkb replaced ours
);

CREATE TABLE attackers (
    killmail_id     bigint  NOT NULL REFERENCES killmails (killmail_id) ON DELETE CASCADE,
    attacker_index  integer NOT NULL,             -- position in ESI's attackers list
    character_id    bigint,
    corporation_id  bigint,
    alliance_id     bigint,
    faction_id      bigint,
    ship_type_id    bigint,
    weapon_type_id  bigint,
    damage_done     bigint  NOT NULL,
    final_blow      boolean NOT NULL,
    security_status double precision NOT NULL,
    PRIMARY KEY (killmail_id, attacker_index)
);

CREATE TABLE items (
    killmail_id        bigint  NOT NULL REFERENCES killmails (killmail_id) ON DELETE CASCADE,
    item_index         integer NOT NULL,          -- position in a pre-order walk of victim.items
    parent_index       integer,                   -- the container's item_index; NULL at top level
    item_type_id       bigint  NOT NULL,
    flag               integer NOT NULL,
    quantity_destroyed bigint,
    quantity_dropped   bigint,
    singleton          integer NOT NULL,
    PRIMARY KEY (killmail_id, item_index)
);

-- What users ask: recent kills, by place, by victim, by attacker, by value.
CREATE INDEX killmails_time_idx            ON killmails (killmail_time DESC);
CREATE INDEX killmails_system_time_idx     ON killmails (solar_system_id, killmail_time DESC);
CREATE INDEX killmails_victim_character_idx   ON killmails (victim_character_id)   WHERE victim_character_id IS NOT NULL;
CREATE INDEX killmails_victim_corporation_idx ON killmails (victim_corporation_id) WHERE victim_corporation_id IS NOT NULL;
CREATE INDEX killmails_victim_alliance_idx    ON killmails (victim_alliance_id)    WHERE victim_alliance_id IS NOT NULL;
CREATE INDEX killmails_total_value_idx     ON killmails (zkb_total_value DESC NULLS LAST);
CREATE INDEX attackers_character_idx   ON attackers (character_id)   WHERE character_id IS NOT NULL;
CREATE INDEX attackers_corporation_idx ON attackers (corporation_id) WHERE corporation_id IS NOT NULL;
CREATE INDEX attackers_alliance_idx    ON attackers (alliance_id)    WHERE alliance_id IS NOT NULL;
