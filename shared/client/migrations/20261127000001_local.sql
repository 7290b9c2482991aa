-- Every update of every document this client holds, local and remote, in arrival order.
-- `pending` marks local edits the server has not yet acknowledged as durable.
CREATE TABLE log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id   TEXT NOT NULL,
    data     BLOB NOT NULL,
    pending  INTEGER NOT NULL
);
CREATE INDEX log_by_doc ON log(doc_id, id);
