-- Administrators' second factor: a TOTP secret once enrolled, and the last time step accepted, so
-- that each code is used at most once.
ALTER TABLE administrators ADD COLUMN totp_secret BLOB;
ALTER TABLE administrators ADD COLUMN totp_last_step INTEGER;

-- A console sign-in that passed the password and waits for its TOTP code, or for the enrolment
-- of one (then `proposed_totp_secret` holds the secret shown, until a code confirms it). Sessions
-- are only ever created from a challenge that was met.
CREATE TABLE admin_sign_in_challenges (
    token_hash BLOB PRIMARY KEY,
    administrator_id INTEGER NOT NULL REFERENCES administrators (id) ON DELETE CASCADE,
    proposed_totp_secret BLOB,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
