//! The PostgreSQL engine against a PostgreSQL server of the test's own: the same storage
//! contract as SQLite (checked on both), gapless per-document numbers when several servers
//! commit at once, compactions that race, and the real server binary and its commands run with
//! `--database-url`.

use std::sync::Arc;

use quire_protocol::request::VersionKind;
use quire_protocol::ChannelId;
use quire_server::store::{
    Append, LogSize, NewVersion, PgStore, QuotaFull, SqliteStore, Store, StoredDoc,
};
use quire_server::versions::HistoryPolicy;
use quire_tests::doc_peer::Peer;
use quire_tests::postgres::Postgres;
use quire_tests::server_process::{command_in, stdout_of, ServerProcess};

const CH: ChannelId = ChannelId(1);

fn append<'a>(doc: &'a str, data: &'a [u8]) -> Append<'a> {
    Append { doc, data }
}

/// Joins the snapshot and the log: a stand-in merge whose result shows what it was given.
fn concat(stored: &StoredDoc) -> Result<Vec<u8>, quire_server::store::CorruptContent> {
    let mut out = stored.snapshot.clone().unwrap_or_default();
    for update in &stored.updates {
        out.extend_from_slice(update);
    }
    Ok(out)
}

/// Every method of the storage contract, on one engine.
async fn check_contract(store: &impl Store, backup_dir: &std::path::Path) {
    assert!(store.load("a").await.unwrap().is_empty());
    let seqs = store
        .append_batch(&[append("a", b"1"), append("b", b"x"), append("a", b"2")])
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 1, 2], "numbered per document, in batch order");
    assert_eq!(
        store.load("a").await.unwrap().updates,
        vec![b"1".to_vec(), b"2".to_vec()]
    );
    assert_eq!(
        store.log_size("a").await.unwrap(),
        LogSize {
            updates: 2,
            bytes: 2
        }
    );
    let mut heads = store.heads(&["a", "b", "unknown"]).await.unwrap();
    heads.sort();
    assert_eq!(heads, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    let after = store.load_after("a", 1).await.unwrap();
    assert_eq!(
        (after.snapshot, after.updates, after.head),
        (None, vec![b"2".to_vec()], 2)
    );

    // Compaction folds the log and keeps what came after; a stale one changes nothing.
    store.compact("a", concat).await.unwrap();
    assert_eq!(
        store.append_batch(&[append("a", b"3")]).await.unwrap(),
        vec![3]
    );
    store.compact_to("a", 1, b"stale").await.unwrap();
    let a = store.load("a").await.unwrap();
    assert_eq!(a.snapshot.as_deref(), Some(&b"12"[..]));
    assert_eq!(a.updates, vec![b"3".to_vec()]);
    assert_eq!(store.log_size("a").await.unwrap().updates, 1);
    // Behind a compaction, the rest comes with the snapshot that folded it.
    let after = store.load_after("a", 1).await.unwrap();
    assert_eq!(after.snapshot.as_deref(), Some(&b"12"[..]));
    assert_eq!((after.updates, after.head), (vec![b"3".to_vec()], 3));
    let after = store.load_after("a", 3).await.unwrap();
    assert!(after.is_empty() && after.head == 3);
    // IDs sort by their bytes ("B" < "a" < "b"), whatever the database's collation.
    store.append_batch(&[append("B", b"y")]).await.unwrap();
    assert_eq!(store.list().await.unwrap(), ["B", "a", "b"]);

    // Versions: saved, listed newest first, loaded, deleted; named ones within their quota.
    let policy = HistoryPolicy {
        max_count: 3,
        max_bytes: 1000,
        ..HistoryPolicy::default()
    };
    let authors = ["Ada".to_owned(), "Grace".to_owned()];
    let version = |created_ms, kind, name| NewVersion {
        created_ms,
        kind,
        name,
        authors: &authors,
        state: b"state",
    };
    let first = store
        .save_version("a", version(1_000, VersionKind::Auto, ""), &policy)
        .await
        .unwrap()
        .unwrap();
    let named = store
        .save_version("a", version(2_000, VersionKind::Named, "draft"), &policy)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(named.authors, authors);
    let listed = store.list_versions("a").await.unwrap();
    assert_eq!(
        listed.iter().map(|v| v.id).collect::<Vec<_>>(),
        [named.id, first.id]
    );
    assert_eq!(listed[0].name, "draft");
    assert_eq!(listed[0].authors, authors);
    let (info, state) = store.load_version("a", named.id).await.unwrap().unwrap();
    assert_eq!(
        (info.kind, state.as_slice()),
        (VersionKind::Named, &b"state"[..])
    );
    assert!(store.load_version("b", named.id).await.unwrap().is_none());
    let tight = HistoryPolicy {
        max_count: 1,
        ..policy
    };
    assert_eq!(
        store
            .save_version("a", version(3_000, VersionKind::Named, "more"), &tight)
            .await
            .unwrap(),
        Err(QuotaFull)
    );
    assert_eq!(
        store.load("a").await.unwrap().marks.newest_version_ms,
        Some(2_000)
    );
    assert!(store.delete_version("a", first.id).await.unwrap());
    assert!(!store.delete_version("a", first.id).await.unwrap());

    // The trash: in, listed, out, in again, purged with everything stored of it.
    assert!(store.trash("b", 5_000).await.unwrap());
    assert!(!store.trash("b", 6_000).await.unwrap());
    assert_eq!(store.load("b").await.unwrap().marks.trashed_ms, Some(5_000));
    assert_eq!(store.list_trash().await.unwrap(), [("b".to_owned(), 5_000)]);
    assert!(store.untrash("b").await.unwrap());
    assert!(!store.untrash("b").await.unwrap());
    assert!(store.trash("a", 7_000).await.unwrap());
    assert!(store.purge(None, 6_999).await.unwrap().is_empty());
    assert_eq!(store.purge(Some("a"), u64::MAX).await.unwrap(), ["a"]);
    assert!(store.load("a").await.unwrap().is_empty());
    assert!(store.list_versions("a").await.unwrap().is_empty());
    assert_eq!(store.list().await.unwrap(), ["B", "b"]);

    // A backup is a SQLite database that the embedded store opens.
    let copy = backup_dir.join("copy.db");
    store.backup(&copy).await.unwrap();
    let restored_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        &copy,
        restored_dir.path().join(quire_server::store::DB_FILE),
    )
    .unwrap();
    let restored = SqliteStore::open(restored_dir.path()).await.unwrap();
    assert_eq!(restored.list().await.unwrap(), ["B", "b"]);
    assert_eq!(
        restored.load("b").await.unwrap().updates,
        vec![b"x".to_vec()]
    );
    assert_eq!(
        restored.append_batch(&[append("b", b"z")]).await.unwrap(),
        vec![2],
        "the copy numbers on from where the original was"
    );
    restored.close().await;
}

#[tokio::test]
async fn both_engines_keep_the_same_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).await.unwrap();
    check_contract(&sqlite, dir.path()).await;

    let postgres = Postgres::start().await;
    let url = postgres.create_database("contract").await;
    let pg = PgStore::open(&url).await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    check_contract(&pg, backups.path()).await;
    // Opening again finds the migrations done.
    PgStore::open(&url).await.unwrap();
}

/// Three stores (as three servers would) commit batches touching the same documents at once:
/// every document's numbers are 1..=N with no gap and no repeat, and its log holds every
/// update in number order.
#[tokio::test]
async fn servers_committing_together_number_each_document_gaplessly() {
    let postgres = Postgres::start().await;
    let url = postgres.create_database("numbers").await;
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(PgStore::open(&url).await.unwrap()));
    }
    const BATCHES: usize = 40;
    const DOCS: [&str; 4] = ["d0", "d1", "d2", "d3"];
    let mut tasks = Vec::new();
    for (node, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut numbered = Vec::new();
            for batch in 0..BATCHES {
                // Each batch touches the documents in a different order.
                let data: Vec<(&str, Vec<u8>)> = (0..6)
                    .map(|i| {
                        let doc = DOCS[(batch + i * (node + 1)) % DOCS.len()];
                        (doc, format!("{node}/{batch}/{i}").into_bytes())
                    })
                    .collect();
                let appends: Vec<Append<'_>> =
                    data.iter().map(|(doc, bytes)| append(doc, bytes)).collect();
                let seqs = store.append_batch(&appends).await.unwrap();
                numbered.extend(data.into_iter().zip(seqs));
            }
            numbered
        }));
    }
    let mut numbered = Vec::new();
    for task in tasks {
        numbered.extend(task.await.unwrap());
    }
    for doc in DOCS {
        let mut mine: Vec<(i64, Vec<u8>)> = numbered
            .iter()
            .filter(|((d, _), _)| *d == doc)
            .map(|((_, bytes), seq)| (*seq, bytes.clone()))
            .collect();
        mine.sort();
        let seqs: Vec<i64> = mine.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=mine.len() as i64).collect::<Vec<_>>(), "{doc}");
        let stored = stores[0].load(doc).await.unwrap();
        assert_eq!(
            stored.updates,
            mine.into_iter().map(|(_, bytes)| bytes).collect::<Vec<_>>(),
            "{doc}: the log in number order"
        );
    }
}

/// Compactions by several servers of one document while writes go on: whatever order they
/// commit in, nothing is lost and nothing is folded twice.
#[tokio::test]
async fn racing_compactions_keep_every_update_once() {
    let postgres = Postgres::start().await;
    let url = postgres.create_database("compaction").await;
    let writer = PgStore::open(&url).await.unwrap();
    let compactors = [
        PgStore::open(&url).await.unwrap(),
        PgStore::open(&url).await.unwrap(),
    ];
    let mut expected = Vec::new();
    for round in 0..20u32 {
        let bytes = format!("<{round}>").into_bytes();
        writer.append_batch(&[append("doc", &bytes)]).await.unwrap();
        expected.extend_from_slice(&bytes);
        let (a, b) = tokio::join!(
            compactors[0].compact("doc", concat),
            compactors[1].compact("doc", concat)
        );
        a.unwrap();
        b.unwrap();
    }
    let stored = writer.load("doc").await.unwrap();
    assert!(
        stored.updates.is_empty(),
        "the last round folded everything"
    );
    assert_eq!(stored.snapshot.unwrap(), expected);
}

/// The server binary on PostgreSQL: writes are acknowledged, survive kill -9, and a second
/// server on the same database serves them; the commands work against the database too, and
/// a document imported from the command line reaches a live server's client.
#[tokio::test]
async fn the_server_and_its_commands_run_on_postgres() {
    let postgres = Postgres::start().await;
    let url = postgres.create_database("served").await;
    let mut first = ServerProcess::start(&["--database-url", &url]);
    let token = first.token(&["*"], true, "1h");
    let mut alice = Peer::connect(&first, Some(&token)).await;
    alice.open_synced(CH, "notes/pg").await;
    for n in 0..20 {
        alice.append(CH, &format!("[{n}]")).await;
    }
    alice
        .pump_until("every write acked", |p| {
            p.docs[&CH].acked == p.docs[&CH].writes
        })
        .await;
    let text = alice.text(CH);
    drop(alice);
    first.kill9();

    // Another server, its own data directory, the same database.
    let second = ServerProcess::start(&["--database-url", &url, "--no-auth"]);
    let mut bob = Peer::connect(&second, None).await;
    bob.open_synced(CH, "notes/pg").await;
    assert_eq!(bob.text(CH), text, "what the first server acknowledged");
    drop(bob);
    // A client of the live server with an empty document open, which the command line
    // imports into below.
    let mut carol = Peer::connect(&second, None).await;
    carol.open_synced(CH, "notes/new").await;

    // The commands, pointed at the database (the data directory only holds the secret).
    let dir = tempfile::tempdir().unwrap();
    let with_db = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--database-url", url.as_str()]);
        command_in(dir.path(), &all)
    };
    assert_eq!(stdout_of(with_db(&["list"])).trim(), "notes/pg");
    assert_eq!(stdout_of(with_db(&["export", "notes/pg"])), text);
    let file = dir.path().join("imported.txt");
    std::fs::write(&file, "from a file").unwrap();
    stdout_of(with_db(&["import", "notes/new", file.to_str().unwrap()]));
    // The live server finds the import in the database and relays it to its client.
    carol
        .pump_until("the import at the live server's client", |p| {
            p.text(CH) == "from a file"
        })
        .await;
    stdout_of(with_db(&["compact"]));
    assert_eq!(stdout_of(with_db(&["export", "notes/new"])), "from a file");
    let backup = dir.path().join("backup.db");
    stdout_of(with_db(&["backup", backup.to_str().unwrap()]));
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, restored.path().join("quire.db")).unwrap();
    assert_eq!(
        stdout_of(command_in(restored.path(), &["export", "notes/pg"])),
        text
    );
    let bad = command_in(dir.path(), &["list", "--database-url", "mysql://nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("postgres://"));
}

/// Two servers on one database serving the same document, each compacting it as it grows:
/// no server's memory holds the other's edits, so a compaction that wrote a server's own state
/// would drop them. After both stop, a fresh server serves every edit of both clients.
#[tokio::test]
async fn compaction_on_a_shared_database_keeps_other_servers_edits() {
    let postgres = Postgres::start().await;
    let url = postgres.create_database("shared").await;
    let flags = [
        "--database-url",
        url.as_str(),
        "--no-auth",
        "--compact-after-updates",
        "5",
    ];
    let mut one = ServerProcess::start(&flags);
    let mut two = ServerProcess::start(&flags);
    let mut alice = Peer::connect(&one, None).await;
    let mut bob = Peer::connect(&two, None).await;
    alice.open_synced(CH, "shared/doc").await;
    bob.open_synced(CH, "shared/doc").await;
    for n in 0..30 {
        alice.append(CH, &format!("<a{n}>")).await;
        bob.append(CH, &format!("<b{n}>")).await;
    }
    alice
        .pump_until("Alice's writes acked", |p| {
            p.docs[&CH].acked == p.docs[&CH].writes
        })
        .await;
    bob.pump_until("Bob's writes acked", |p| {
        p.docs[&CH].acked == p.docs[&CH].writes
    })
    .await;
    drop((alice, bob));
    one.terminate();
    two.terminate();

    let three = ServerProcess::start(&flags);
    let mut carol = Peer::connect(&three, None).await;
    carol.open_synced(CH, "shared/doc").await;
    let text = carol.text(CH);
    for n in 0..30 {
        for who in ["a", "b"] {
            let mark = format!("<{who}{n}>");
            assert_eq!(text.matches(&mark).count(), 1, "{mark} once in {text}");
        }
    }
}

/// Clients of one document on two servers sharing a database see each other's edits: each
/// server checks the database for what the other stored and relays it. Both end with the
/// same text, every edit once.
#[tokio::test]
async fn edits_reach_the_clients_of_another_server_through_the_database() {
    let postgres = Postgres::start().await;
    let url = postgres.create_database("live").await;
    let flags = [
        "--database-url",
        url.as_str(),
        "--no-auth",
        "--shared-poll-ms",
        "20",
    ];
    let one = ServerProcess::start(&flags);
    let two = ServerProcess::start(&flags);
    let mut alice = Peer::connect(&one, None).await;
    let mut bob = Peer::connect(&two, None).await;
    alice.open_synced(CH, "live/doc").await;
    bob.open_synced(CH, "live/doc").await;
    for n in 0..10 {
        let mark = format!("<a{n}>");
        alice.append(CH, &mark).await;
        bob.pump_until(&format!("{mark} through the database"), |p| {
            p.text(CH).contains(&mark)
        })
        .await;
        let mark = format!("<b{n}>");
        bob.append(CH, &mark).await;
        alice
            .pump_until(&format!("{mark} through the database"), |p| {
                p.text(CH).contains(&mark)
            })
            .await;
    }
    let text = alice.text(CH);
    assert_eq!(bob.text(CH), text);
    for n in 0..10 {
        for who in ["a", "b"] {
            assert_eq!(text.matches(&format!("<{who}{n}>")).count(), 1, "{text}");
        }
    }
    assert!(one.metric("quire_remote_catch_ups_total").await >= 1.0);
    assert!(two.metric("quire_remote_catch_ups_total").await >= 1.0);
}
