-- Administrators can be disabled (kept for the record, refused at sign-in, their sessions ended),
-- and a session ends after an idle time as well as at its expiry.
ALTER TABLE administrators ADD COLUMN disabled_at INTEGER;
ALTER TABLE admin_sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE admin_sessions SET last_used_at = created_at;
