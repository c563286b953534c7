-- Killmail events (killstream/events/, docs/events.md): which zKillboard version of each killmail
-- the fetcher has published to the event bus, so a publish that fails after the write commits is
-- retried by the message's redelivery without writing the killmail again.
--
-- zkb_version counts the zkb updates applied to the row: 0 as first stored, one more each time
-- newer zKillboard values replace ours. published_version is the zkb_version the event bus last
-- took (a "Killmail Stored" event, then a "Killmail Updated" one per version): NULL means the
-- killmail's "Killmail Stored" event is still to go, a value below zkb_version an update's.
-- Killmails stored before this migration, and those written by paths that do not publish
-- (history is not news), count as published: DEFAULT 0. The live fetcher writes NULL.
ALTER TABLE killmails
    ADD COLUMN zkb_version       integer NOT NULL DEFAULT 0,
    ADD COLUMN published_version integer DEFAULT 0;

-- What is still to publish, oldest first (killstream stats; an operator's backlog query).
CREATE INDEX killmails_unpublished_idx ON killmails (stored_at)
    WHERE published_version IS NULL OR published_version < zkb_version;
