-- Every request id a cluster's nodes were sent, so that a retry entering another node than its
-- first attempt is the same request there: the node that owns it, what the operation was (its
-- fingerprint, user and kind, never a secret), the agent it went to, what that agent said it was
-- about to overwrite (JSON of the password stamp) and the verdict (JSON). Kept for an hour. A node
-- alone keeps this in memory and leaves the table empty.
CREATE TABLE request_ledger (
    request_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    user_ref TEXT NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    deadline INTEGER NOT NULL,
    about_to_write TEXT,
    verdict TEXT,
    sent_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX request_ledger_by_time ON request_ledger (sent_at);
