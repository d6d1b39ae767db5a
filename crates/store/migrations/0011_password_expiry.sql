-- When each synced user's password expires: password_expiry is 'unknown', 'never' or 'at', and
-- password_expires_at holds the time for 'at'. And the expiry reminders sent: one row per user,
-- expiry and threshold, written before the message goes, so that two nodes never both send it
-- and a new password (a new expiry) starts the thresholds again.
ALTER TABLE synced_users ADD COLUMN password_expiry TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE synced_users ADD COLUMN password_expires_at INTEGER;
CREATE INDEX synced_users_expiry ON synced_users (password_expires_at);
CREATE TABLE expiry_reminders (
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    user_anchor TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    threshold_days INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (directory_id, user_anchor, expires_at, threshold_days)
) WITHOUT ROWID;
