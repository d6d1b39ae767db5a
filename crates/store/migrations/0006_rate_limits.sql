-- Rate limits, reserved before the work they guard. Each row is one attempt (or one block) held
-- against a bucket such as `proof:account:corp\jdoe` or `proof:address:192.0.2.7`; a limit counts
-- the rows of its bucket within its window. Reserving counts and inserts in one write
-- transaction, so parallel requests cannot all pass one check. Rows older than any window are
-- pruned as new ones arrive.
CREATE TABLE rate_limit_slots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX rate_limit_slots_by_bucket ON rate_limit_slots (bucket, at);
CREATE INDEX rate_limit_slots_by_time ON rate_limit_slots (at);
