-- Documents known to the server. A row exists once a document has stored content.
CREATE TABLE documents (
    id          TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Append-only log of Yjs v1 updates, in commit order per document.
CREATE TABLE updates (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    data    BLOB NOT NULL
);
CREATE INDEX updates_by_doc ON updates(doc_id, id);

-- Compacted state: the log up to and including `through_id` merged into one update.
CREATE TABLE snapshots (
    doc_id      TEXT PRIMARY KEY NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    data        BLOB NOT NULL,
    through_id  INTEGER NOT NULL
);
