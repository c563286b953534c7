-- Latest wins by publication: R2Z2 rewrites a file in place (same sequence_id, newer uploaded_at),
-- so the stored row keeps the publication time of the values it holds (docs/protocols.md, "R2Z2").
ALTER TABLE killmails ADD COLUMN uploaded_at timestamptz;  -- R2Z2 uploaded_at of the zkb values stored; NULL: none given (RedisQ)
ALTER TABLE killmails ADD COLUMN zkb_droppable_value numeric;  -- zkb.totalDroppableValue
