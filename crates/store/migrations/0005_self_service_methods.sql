-- The verification methods each user registered in the self-service portal, keyed by directory
-- and the user's anchor (objectGUID), so a rename or move keeps them. `value` is what the user
-- sees masked (an email address or phone number); `secret` is what checks a proof (an
-- authenticator key, or the questions with Argon2 hashes of their answers). A method is only
-- stored once proven: a code sent to the address, or one from the authenticator.
CREATE TABLE self_service_methods (
    directory TEXT NOT NULL,
    user_anchor TEXT NOT NULL,
    method TEXT NOT NULL,
    value TEXT,
    secret BLOB,
    last_totp_step INTEGER,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (directory, user_anchor, method)
) WITHOUT ROWID;

-- When the user last confirmed that their methods are still theirs (registration counts).
CREATE TABLE self_service_confirmations (
    directory TEXT NOT NULL,
    user_anchor TEXT NOT NULL,
    confirmed_at INTEGER NOT NULL,
    PRIMARY KEY (directory, user_anchor)
) WITHOUT ROWID;
