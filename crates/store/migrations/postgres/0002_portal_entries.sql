-- As SQLite's 0009: what the portal remembers between pages, shared by the nodes.
CREATE TABLE portal_entries (
    kind TEXT NOT NULL,
    key BYTEA NOT NULL,
    started_at BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX portal_entries_by_start ON portal_entries (kind, started_at);
