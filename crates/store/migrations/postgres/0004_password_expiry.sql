-- As SQLite's 0011: each synced user's password expiry, and the expiry reminders sent.
ALTER TABLE synced_users ADD COLUMN password_expiry TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE synced_users ADD COLUMN password_expires_at BIGINT;
CREATE INDEX synced_users_expiry ON synced_users (password_expires_at);
CREATE TABLE expiry_reminders (
    directory_id BIGINT NOT NULL REFERENCES directories (id),
    user_anchor TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    threshold_days BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (directory_id, user_anchor, expires_at, threshold_days)
);
