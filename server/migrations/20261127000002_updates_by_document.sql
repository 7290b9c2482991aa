-- The update log clustered by document. Each document's updates sit together in the table's
-- B-tree: a commit touches about one page per document it writes, a compaction deletes one
-- contiguous range, and a load reads one. In the first layout (rowid order, with an index by
-- document) a compaction deleted rows spread over as many pages as it had rows.
--
-- `seq` counts per document, and `documents.last_seq` holds the last one given, so numbers
-- only grow and a compaction's "through" bound stays valid while appends continue. Rows carried
-- over keep their old ids as `seq`: their order and every snapshot's `through_id` stay valid.
-- `last_seq` starts above both the log and the snapshot, so no new update is numbered inside
-- what a snapshot already covers.
ALTER TABLE documents ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;

UPDATE documents SET last_seq = MAX(
    COALESCE((SELECT MAX(id) FROM updates WHERE doc_id = documents.id), 0),
    COALESCE((SELECT through_id FROM snapshots WHERE doc_id = documents.id), 0));

CREATE TABLE updates_by_document (
    doc_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (doc_id, seq)
) WITHOUT ROWID;

INSERT INTO updates_by_document (doc_id, seq, data)
    SELECT doc_id, id, data FROM updates ORDER BY doc_id, id;

DROP TABLE updates;

ALTER TABLE updates_by_document RENAME TO updates;
