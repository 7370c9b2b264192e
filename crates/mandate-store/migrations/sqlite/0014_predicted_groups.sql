-- Nothing on SQLite: migration 0014 adds PostgreSQL's guard for audit
-- groups committed on their writer's predictions (ADR 0033, sixth
-- amendment). SQLite's writer opens a group without a round trip, so it
-- does not predict.
SELECT 1;
