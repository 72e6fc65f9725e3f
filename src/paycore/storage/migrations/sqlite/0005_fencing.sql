-- Schema v5: fencing tokens (see paycore.locks). A worker holding a lock writes with its
-- lock's token; the newest token seen per lock name is kept here, and a write carrying
-- an older one is refused in its own transaction, so a holder paused past its lease
-- cannot write after the next holder did.

CREATE TABLE fencing_tokens (
    name       TEXT PRIMARY KEY,
    token      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
