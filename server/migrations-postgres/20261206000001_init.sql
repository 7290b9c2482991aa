-- Quire's schema on PostgreSQL: the same tables as the embedded SQLite store
-- (server/migrations), in one step. Times are in seconds (created_at, updated_at of documents)
-- or milliseconds (trashed_at, versions.created_at) since the Unix epoch, as there.

-- Documents known to the server. A row exists once a document has stored content, a version
-- or a place in the trash. `last_seq` is the last number given to an update of the document:
-- a group commit raises it with an upsert, which holds the row's lock until the commit, so each
-- document's numbers are gapless and follow commit order whichever node commits.
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL DEFAULT 0,
    trashed_at  BIGINT
);

-- The log of Yjs v1 updates after the snapshot, per document, in commit order.
CREATE TABLE updates (
    doc_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (doc_id, seq)
);

-- Compacted state: the log through `through_id` merged into one update.
CREATE TABLE snapshots (
    doc_id      TEXT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    data        BYTEA NOT NULL,
    through_id  BIGINT NOT NULL
);

-- Versions: a document's whole state at a point in time, beside the log (compaction never
-- touches them). kind: 0 automatic, 1 named by a user, 2 saved just before a restore.
CREATE TABLE versions (
    id          BIGSERIAL PRIMARY KEY,
    doc_id      TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    kind        BIGINT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    authors     TEXT NOT NULL DEFAULT '',
    size        BIGINT NOT NULL,
    state       BYTEA NOT NULL
);
CREATE INDEX versions_by_document ON versions(doc_id, created_at);
