-- Completeness, proven per UTC day against an upstream's history (docs/protocols.md, "R2Z2 history").
-- Table and column names are a contract: dashboards and users query them (README, "Completeness").

-- One row per (source, day): the last check of that day.
CREATE TABLE reconciliation (
    source          text    NOT NULL,            -- whose history: 'history' (zKillboard's), later 'everef', ...
    day             date    NOT NULL,            -- the UTC day, by killmail_time
    status          text    NOT NULL CHECK (status IN ('complete', 'recovering', 'incomplete', 'error')),
    expected        integer,                     -- killmails the upstream counts for the day (totals.json)
    listed          integer,                     -- ids in the day list (NULL: the list was not read)
    unlisted        integer NOT NULL DEFAULT 0,  -- counted but not listed (zKillboard leaves out empty hashes)
    stored_before   integer NOT NULL,            -- rows stored for the day when the check began
    stored          integer NOT NULL,            -- rows stored for the day when the check ended
    missing         integer NOT NULL DEFAULT 0,  -- listed ids not stored when the check began
    recovered       integer NOT NULL DEFAULT 0,  -- of those, stored since (by this check, or through the queue)
    enqueued        integer NOT NULL DEFAULT 0,  -- of those, put on the killmail queue for the fetcher
    still_missing   integer NOT NULL DEFAULT 0,  -- listed ids not stored when the check ended: reconciliation_missing says why
    method          text,                        -- how the missing ones were asked for: queue, raw, esi, raw+queue, raw+esi
    error           text,                        -- what went wrong reading this day's history (NULL: nothing)
    list_checked_at timestamptz,                 -- when the day list was last read and compared
    incomplete_runs integer NOT NULL DEFAULT 0,  -- consecutive checks that ended with the day not complete
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, day)
);

-- What a day still lacks, one row per killmail, and why.
CREATE TABLE reconciliation_missing (
    source        text   NOT NULL,
    day           date   NOT NULL,
    killmail_id   bigint NOT NULL,
    killmail_hash text   NOT NULL,               -- as the day list gives it
    reason        text   NOT NULL,               -- esi_invalid_killmail, queued, not_fetched, malformed_hash, ...
    detail        text,
    since         timestamptz NOT NULL DEFAULT now(),  -- first found missing
    PRIMARY KEY (source, day, killmail_id),
    FOREIGN KEY (source, day) REFERENCES reconciliation (source, day) ON DELETE CASCADE
);

-- Killmails a message named that could never be stored (the fetcher's permanent failures, written
-- best-effort when it dead-letters them): the reconciler's answer to "why is this one missing?",
-- and why it does not ask ESI for them again.
CREATE TABLE killmail_failures (
    killmail_id   bigint      PRIMARY KEY,
    killmail_hash text        NOT NULL,
    source        text        NOT NULL,
    error_type    text        NOT NULL,          -- the DLQ's error_type: esi_invalid_killmail, validation_error, ...
    error_message text        NOT NULL,
    failures      integer     NOT NULL DEFAULT 1,
    failed_at     timestamptz NOT NULL DEFAULT now()
);
