-- Version history and the trash.
--
-- A version holds a document's whole state (one Yjs v1 update) at a point in time. Versions
-- live beside the log and the snapshot, not in them: compaction never touches them, and
-- purging a document deletes them with it (ON DELETE CASCADE).
CREATE TABLE versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id      TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    -- Milliseconds since the Unix epoch.
    created_at  INTEGER NOT NULL,
    -- 0 automatic, 1 named by a user, 2 saved just before a restore.
    kind        INTEGER NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    -- Display names, one per line.
    authors     TEXT NOT NULL DEFAULT '',
    size        INTEGER NOT NULL,
    state       BLOB NOT NULL
);
CREATE INDEX versions_by_document ON versions(doc_id, created_at);

-- When the document was moved to the trash (milliseconds since the Unix epoch); NULL while
-- it is not in the trash. A trashed document cannot be opened; it is purged, versions and
-- all, once it has been in the trash for the retention time.
ALTER TABLE documents ADD COLUMN trashed_at INTEGER;
