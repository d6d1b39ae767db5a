-- Times are milliseconds since the Unix epoch. Secrets (admin passwords, session tokens,
-- registration tokens) are stored only as hashes; user passwords are never stored at all.

CREATE TABLE administrators (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE admin_sessions (
    token_hash BLOB PRIMARY KEY,
    administrator_id INTEGER NOT NULL REFERENCES administrators (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE directories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE registration_tokens (
    token_hash BLOB PRIMARY KEY,
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    redeemed_at INTEGER,
    agent_id TEXT
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    identity_key BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    last_connected_at INTEGER,
    last_heartbeat_at INTEGER,
    last_error TEXT
);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    directory TEXT,
    target TEXT,
    request_id TEXT,
    result_code TEXT NOT NULL,
    detail TEXT
);

CREATE INDEX audit_events_at ON audit_events (at);
