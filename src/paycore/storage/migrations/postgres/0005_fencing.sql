-- Schema v5: fencing tokens (see paycore.locks). A worker holding a lock writes with its
-- lock's token; the newest token seen per lock name is kept here, and a write carrying
-- an older one is refused in its own transaction, so a holder paused past its lease
-- cannot write after the next holder did.

CREATE TABLE fencing_tokens (
    name       text COLLATE "C" PRIMARY KEY,
    token      bigint  NOT NULL,
    updated_at bigint  NOT NULL
);
