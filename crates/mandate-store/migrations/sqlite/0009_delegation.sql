-- Delegation chains: a running mission delegates a child mission to a
-- sub-agent. The chain itself is in each child's body (its ancestors,
-- hashed into mission_s256); these columns index it, so a mission's
-- descendants are found (and ended with it) without parsing bodies.

-- The mission a child was delegated from; NULL for a principal's own
-- mission.
ALTER TABLE missions ADD COLUMN parent_id TEXT REFERENCES missions(id);
CREATE INDEX missions_parent ON missions(parent_id) WHERE parent_id IS NOT NULL;

-- The root of a child's chain (the principal's own mission); NULL for a
-- root. Limits that hold for a whole delegation tree (pending approvals)
-- count by it.
ALTER TABLE missions ADD COLUMN root_id TEXT REFERENCES missions(id);
CREATE INDEX missions_root ON missions(root_id) WHERE root_id IS NOT NULL;

-- For an ephemeral sub-agent (`label@msn_…`), the one mission it exists
-- for; NULL for a registered agent. Not a foreign key: the agent's row is
-- written before its mission's, which references it.
ALTER TABLE agents ADD COLUMN ephemeral_of TEXT;

-- The link that delegated each child (a JWS signed by the parent's
-- mission key), as the parent presented it.
CREATE TABLE delegation_links (
    child_id    TEXT PRIMARY KEY NOT NULL REFERENCES missions(id),
    parent_id   TEXT NOT NULL REFERENCES missions(id),
    link        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX delegation_links_parent ON delegation_links(parent_id);
