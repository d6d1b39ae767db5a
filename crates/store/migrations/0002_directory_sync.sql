-- The cloud's copy of each directory's users and groups, keyed by objectGUID (the anchor), and
-- where sync stands. `generation` is the full sync that last saw the row: when a full sync
-- completes, rows it did not see are gone from the directory and are removed.

CREATE TABLE synced_users (
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    anchor TEXT NOT NULL,
    sid TEXT,
    sam_account_name TEXT NOT NULL COLLATE NOCASE,
    user_principal_name TEXT COLLATE NOCASE,
    mail TEXT COLLATE NOCASE,
    display_name TEXT,
    given_name TEXT,
    surname TEXT,
    distinguished_name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    locked_out INTEGER NOT NULL,
    password_last_set INTEGER,
    must_change_password INTEGER NOT NULL,
    password_never_expires INTEGER NOT NULL,
    protected INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,
    PRIMARY KEY (directory_id, anchor)
) WITHOUT ROWID;

CREATE INDEX synced_users_sam ON synced_users (directory_id, sam_account_name);
CREATE INDEX synced_users_upn ON synced_users (directory_id, user_principal_name);
CREATE INDEX synced_users_mail ON synced_users (directory_id, mail);

CREATE TABLE synced_groups (
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    anchor TEXT NOT NULL,
    sid TEXT,
    name TEXT NOT NULL COLLATE NOCASE,
    distinguished_name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,
    PRIMARY KEY (directory_id, anchor)
) WITHOUT ROWID;

CREATE INDEX synced_groups_name ON synced_groups (directory_id, name);

-- Direct members by anchor. A member need not be synced itself (it may lie outside the synced
-- OUs); lookups join to what is.
CREATE TABLE synced_members (
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    group_anchor TEXT NOT NULL,
    member_anchor TEXT NOT NULL,
    PRIMARY KEY (directory_id, group_anchor, member_anchor)
) WITHOUT ROWID;

CREATE INDEX synced_members_member ON synced_members (directory_id, member_anchor);

CREATE TABLE sync_state (
    directory_id INTEGER PRIMARY KEY REFERENCES directories (id),
    -- JSON of writeback_proto::sync::SyncCursor; NULL before the first batch.
    cursor TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    full_requested INTEGER NOT NULL DEFAULT 0,
    last_full_started_at INTEGER,
    last_full_completed_at INTEGER,
    last_change_at INTEGER,
    cursor_updated_at INTEGER
);

CREATE TABLE sync_errors (
    id INTEGER PRIMARY KEY,
    directory_id INTEGER NOT NULL REFERENCES directories (id),
    at INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    object TEXT NOT NULL,
    message TEXT NOT NULL
);

CREATE INDEX sync_errors_directory ON sync_errors (directory_id, id);
