-- As SQLite's 0010: every request id a cluster's nodes were sent.
CREATE TABLE request_ledger (
    request_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    user_ref TEXT NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    deadline BIGINT NOT NULL,
    about_to_write TEXT,
    verdict TEXT,
    sent_at BIGINT NOT NULL
);
CREATE INDEX request_ledger_by_time ON request_ledger (sent_at);
