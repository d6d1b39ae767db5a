-- What the self-service portal remembers between pages (a reset in progress, a signed-in user),
-- when several cloud nodes share this database: by kind and the SHA-256 of the cookie, sealed
-- under the cloud's secrets key. A node alone keeps them in memory and leaves this table empty.
CREATE TABLE portal_entries (
    kind TEXT NOT NULL,
    key BLOB NOT NULL,
    started_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX portal_entries_by_start ON portal_entries (kind, started_at);
