-- Operating Writeback: revoked agents, where each audited action came from, settings, and an
-- audit log that only grows except for retention.

ALTER TABLE agents ADD COLUMN revoked_at INTEGER;
-- The address the agent last connected from.
ALTER TABLE agents ADD COLUMN last_address TEXT;

-- The client address an audited action came from (an administrator's or an agent's).
ALTER TABLE audit_events ADD COLUMN origin TEXT;

CREATE INDEX audit_events_actor ON audit_events (actor COLLATE NOCASE, at);
CREATE INDEX audit_events_target ON audit_events (target COLLATE NOCASE, at);

-- Settings an administrator edits, by name, as JSON.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Retention may remove only entries older than `prune_before`, which only moves forward; every
-- other update or delete of the audit log is refused by the database itself.
CREATE TABLE audit_retention_floor (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    prune_before INTEGER NOT NULL
);
INSERT INTO audit_retention_floor (only_row, prune_before) VALUES (1, 0);

CREATE TRIGGER audit_floor_moves_forward BEFORE UPDATE ON audit_retention_floor
WHEN NEW.prune_before < OLD.prune_before
BEGIN
    SELECT RAISE(ABORT, 'the audit retention floor only moves forward');
END;

CREATE TRIGGER audit_events_are_not_updated BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_events_are_deleted_only_by_retention BEFORE DELETE ON audit_events
WHEN OLD.at >= (SELECT prune_before FROM audit_retention_floor WHERE only_row = 1)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
