//! Version history and the trash against the real server (PROTOCOL §5.4, §6.9): named and
//! automatic versions, restore as a forward edit (while others type, after compaction, after a
//! restart), quota thinning, rights, the trash with its expiry and purge, and the command line.

use std::time::Duration;

use quire_client::{
    Access, Client, ClientError, DocHandle, DocState, SqliteLocalStore, VersionKind,
};
use quire_tests::client_util::{append, config, until_saved, until_state, until_text};
use quire_tests::server_process::{stdout_of, ServerProcess};
use quire_tests::{db_probe, wait};

const DEADLINE: Duration = wait::DEADLINE;

async fn client(server: &ServerProcess, token: &str) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SqliteLocalStore::open(&dir.path().join("local.db"))
            .await
            .unwrap(),
    );
    let client = Client::start(config(server, Some(token.to_owned())), store);
    (client, dir)
}

/// Opens `doc` and waits until it is synced (so its channel is open and requests can go).
async fn open_synced(client: &Client, doc: &str, access: Access) -> DocHandle {
    let handle = client.open(doc, access).await.unwrap();
    until_state(&mut handle.state(), "synced", DEADLINE, |s| {
        matches!(s, DocState::Synced { .. })
    })
    .await;
    handle
}

fn refused_with(result: Result<impl std::fmt::Debug, ClientError>) -> u16 {
    match result {
        Err(ClientError::RequestRefused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_named_version_is_restored_as_an_edit_every_replica_gets() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (alice, _a) = client(&server, &token).await;
    let (bob, _b) = client(&server, &token).await;
    let doc_a = open_synced(&alice, "notes/plan", Access::Write).await;
    let doc_b = open_synced(&bob, "notes/plan", Access::Write).await;

    append(&doc_a, "# Plan\n\nShip on Friday.");
    until_saved(&alice, &doc_a, DEADLINE).await;
    let named = doc_a.create_version("Before the rewrite").await.unwrap();
    assert_eq!(named.kind, VersionKind::Named);
    assert_eq!(named.name, "Before the rewrite");
    assert!(named.authors.contains(&"Tester".to_owned()));
    assert!(named.size > 0);

    append(&doc_a, " Or Monday.");
    until_saved(&alice, &doc_a, DEADLINE).await;
    until_text(&doc_b, "Bob sees the edit", DEADLINE, |t| {
        t.ends_with("Monday.")
    })
    .await;

    // Fetching is read-only: the content comes back, the document is untouched.
    let (info, state) = doc_b.fetch_version(named.id).await.unwrap();
    assert_eq!(info, named);
    assert_eq!(text_of(&state), "# Plan\n\nShip on Friday.");
    assert!(doc_a.text().ends_with("Monday."));

    // Bob restores; both replicas get the edit, Alice's as a remote update.
    let undo = doc_b.restore_version(named.id).await.unwrap();
    assert_eq!(undo.kind, VersionKind::BeforeRestore);
    until_text(&doc_a, "Alice gets the restore", DEADLINE, |t| {
        t == "# Plan\n\nShip on Friday."
    })
    .await;
    assert_eq!(doc_b.text(), "# Plan\n\nShip on Friday.");
    let versions = doc_a.versions().await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.id).collect::<Vec<_>>(),
        [undo.id, named.id],
        "newest first: the version saved before the restore, then the named one"
    );

    // The restore is undone by restoring what it replaced.
    doc_a.restore_version(undo.id).await.unwrap();
    until_text(&doc_b, "the undo reaches Bob", DEADLINE, |t| {
        t.ends_with("Monday.")
    })
    .await;

    // Everything is on disk: after a restart the text and the versions are there.
    server.terminate();
    server.restart();
    let (carol, _c) = client(&server, &token).await;
    let doc_c = open_synced(&carol, "notes/plan", Access::Read).await;
    assert_eq!(doc_c.text(), "# Plan\n\nShip on Friday. Or Monday.");
    assert_eq!(doc_c.versions().await.unwrap().len(), 3);
    for c in [alice, bob, carol] {
        c.close().await;
    }
}

#[tokio::test]
async fn read_rights_list_and_fetch_write_rights_create_and_restore() {
    let server = ServerProcess::start(&[]);
    let writer_token = server.token(&["team/*"], true, "1h");
    let reader_token = server.token(&["team/*"], false, "1h");
    let (writer, _w) = client(&server, &writer_token).await;
    let (reader, _r) = client(&server, &reader_token).await;
    let doc_w = open_synced(&writer, "team/doc", Access::Write).await;
    append(&doc_w, "shared text");
    until_saved(&writer, &doc_w, DEADLINE).await;
    let version = doc_w.create_version("v1").await.unwrap();

    let doc_r = open_synced(&reader, "team/doc", Access::Read).await;
    assert_eq!(
        doc_r.versions().await.unwrap(),
        std::slice::from_ref(&version)
    );
    assert!(doc_r.fetch_version(version.id).await.is_ok());
    assert_eq!(refused_with(doc_r.create_version("mine").await), 4405);
    assert_eq!(refused_with(doc_r.restore_version(version.id).await), 4405);
    assert_eq!(refused_with(doc_r.delete_version(version.id).await), 4405);
    // Not every refusal is about rights: unknown versions and bad names.
    assert_eq!(
        refused_with(doc_w.fetch_version(version.id + 1000).await),
        4404
    );
    assert_eq!(
        refused_with(doc_w.restore_version(version.id + 1000).await),
        4404
    );
    assert_eq!(refused_with(doc_w.create_version("   ").await), 4400);
    // The trash needs write access to the document, and some access to be seen.
    assert_eq!(refused_with(reader.trash("team/doc").await), 4405);
    assert_eq!(refused_with(writer.trash("private/x").await), 4403);
    // Versions of another document are not reachable through this one.
    let other = open_synced(&writer, "team/other", Access::Write).await;
    assert_eq!(refused_with(other.fetch_version(version.id).await), 4404);
    // A refusal closes nothing: the channel still syncs.
    assert!(matches!(*doc_r.state().borrow(), DocState::Synced { .. }));
    writer.close().await;
    reader.close().await;
}

#[tokio::test]
async fn a_restore_while_others_type_converges_with_their_edits() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (alice, _a) = client(&server, &token).await;
    let (bob, _b) = client(&server, &token).await;
    let doc_a = open_synced(&alice, "race/doc", Access::Write).await;
    let doc_b = open_synced(&bob, "race/doc", Access::Write).await;
    append(&doc_a, "alpha beta gamma");
    until_saved(&alice, &doc_a, DEADLINE).await;
    let version = doc_a.create_version("three words").await.unwrap();
    append(&doc_a, " delta epsilon");
    until_saved(&alice, &doc_a, DEADLINE).await;
    until_text(&doc_b, "Bob has it all", DEADLINE, |t| {
        t.ends_with("epsilon")
    })
    .await;

    // Bob types while Alice restores; every one of his keystrokes survives, after or around
    // the restored text, and the replicas agree.
    let typing = {
        let doc_b = doc_b.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                append(&doc_b, &format!("<{n}>"));
                tokio::task::yield_now().await;
            }
        })
    };
    doc_a.restore_version(version.id).await.unwrap();
    typing.await.unwrap();
    until_saved(&bob, &doc_b, DEADLINE).await;
    until_text(&doc_a, "replicas agree", DEADLINE, |t| t == doc_b.text()).await;
    let text = doc_a.text();
    assert!(text.starts_with("alpha beta gamma"), "{text}");
    assert!(!text.contains("delta epsilon"), "{text}");
    for n in 0..40 {
        assert!(
            text.contains(&format!("<{n}>")),
            "keystroke {n} lost: {text}"
        );
    }
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn versions_survive_compaction_and_are_thinned_to_the_quota() {
    // A version per second of editing, at most 3 kept, and compaction every 5 updates.
    let server = ServerProcess::start(&[
        "--version-interval-secs",
        "1",
        "--version-max-count",
        "3",
        "--compact-after-updates",
        "5",
    ]);
    let token = server.token(&["*"], true, "1h");
    let (alice, _a) = client(&server, &token).await;
    let doc = open_synced(&alice, "busy/doc", Access::Write).await;
    append(&doc, "first words");
    until_saved(&alice, &doc, DEADLINE).await;
    let named = doc.create_version("kept").await.unwrap();
    let also_named = doc.create_version("also kept").await.unwrap();
    // A third named one would leave no room for automatic versions.
    assert_eq!(refused_with(doc.create_version("too many").await), 4413);

    // Keep editing until the server has made (and thinned) several automatic versions.
    let mut n = 0;
    let versions = wait::until(
        "automatic versions thinned",
        Duration::from_secs(60),
        || {
            n += 1;
            append(&doc, &format!(" [{n}]"));
            let doc = doc.clone();
            async move {
                let versions = doc.versions().await.ok()?;
                let autos = versions
                    .iter()
                    .filter(|v| v.kind == VersionKind::Auto)
                    .count();
                // Ids grow by one per version saved: once the newest is 5 past the named ones,
                // at least 5 automatic versions were made, and only 1 can be kept beside them.
                let made = versions[0].id.saturating_sub(also_named.id);
                (made >= 5 && autos > 0).then_some(versions)
            }
        },
    )
    .await;
    assert_eq!(versions.len(), 3, "{versions:?}");
    for kept in [&named, &also_named] {
        assert!(versions.contains(kept), "named versions are never thinned");
    }
    until_saved(&alice, &doc, DEADLINE).await;
    let log = db_probe::stored_blobs(&server.db_path(), "busy/doc").await;
    assert!(
        log.len() < n,
        "the log was compacted: {} rows for {n} edits",
        log.len()
    );

    // The named version, from before every compaction, restores.
    doc.restore_version(named.id).await.unwrap();
    until_text(&doc, "restored", DEADLINE, |t| t == "first words").await;
    alice.close().await;
}

#[tokio::test]
async fn the_trash_closes_refuses_restores_and_purges() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (alice, _a) = client(&server, &token).await;
    let (bob, _b) = client(&server, &token).await;
    let doc_a = open_synced(&alice, "trash/doc", Access::Write).await;
    let doc_b = open_synced(&bob, "trash/doc", Access::Write).await;
    append(&doc_a, "precious words");
    until_saved(&alice, &doc_a, DEADLINE).await;
    doc_a.create_version("a version").await.unwrap();

    alice.trash("trash/doc").await.unwrap();
    // Every open channel on it closes with 4410, on both connections.
    for doc in [&doc_a, &doc_b] {
        until_state(&mut doc.state(), "closed by the trash", DEADLINE, |s| {
            matches!(s, DocState::Failed { code: 4410, .. })
        })
        .await;
    }
    let trash = bob.list_trash().await.unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].doc, "trash/doc");
    assert_eq!(trash[0].purge_ms - trash[0].trashed_ms, 30 * 86_400_000);
    // Opening it again is refused while it is in the trash.
    doc_b.clone().close().await;
    let again = bob.open("trash/doc", Access::Write).await.unwrap();
    until_state(&mut again.state(), "refused", DEADLINE, |s| {
        matches!(s, DocState::Failed { code: 4410, .. })
    })
    .await;
    again.close().await;

    // Brought back, it has everything it had.
    bob.untrash("trash/doc").await.unwrap();
    assert!(bob.list_trash().await.unwrap().is_empty());
    let back = open_synced(&bob, "trash/doc", Access::Write).await;
    assert_eq!(back.text(), "precious words");
    assert_eq!(back.versions().await.unwrap().len(), 1);
    assert_eq!(refused_with(bob.untrash("trash/doc").await), 4404);

    // Trashed again and purged: nothing of it is left in the store.
    bob.trash("trash/doc").await.unwrap();
    until_state(&mut back.state(), "closed", DEADLINE, |s| {
        matches!(s, DocState::Failed { code: 4410, .. })
    })
    .await;
    bob.purge("trash/doc").await.unwrap();
    assert_eq!(refused_with(bob.purge("trash/doc").await), 4404);
    assert!(db_probe::stored_blobs(&server.db_path(), "trash/doc")
        .await
        .is_empty());
    assert!(!stdout_of(server.command(&["list"])).contains("trash/doc"));
    assert_eq!(rows(&server, "versions", "trash/doc").await, 0);
    // The ID is free: a client without a local copy of it opens an empty document.
    back.close().await;
    alice.close().await;
    bob.close().await;
    let (carol, _c) = client(&server, &token).await;
    let fresh = open_synced(&carol, "trash/doc", Access::Write).await;
    assert_eq!(fresh.text(), "");

    // Expiry: a document whose time in the trash is up is purged by the server itself.
    let old = open_synced(&carol, "trash/old", Access::Write).await;
    append(&old, "old words");
    until_saved(&carol, &old, DEADLINE).await;
    carol.trash("trash/old").await.unwrap();
    carol.close().await;
    server.terminate();
    server.set_extra(&["--trash-retention-days", "0"]);
    server.restart();
    wait::until("expired document purged", DEADLINE, || async {
        let gone = !stdout_of(server.command(&["list"])).contains("trash/old");
        gone.then_some(())
    })
    .await;
    assert_eq!(rows(&server, "versions", "trash/old").await, 0);
}

/// Rows of `table` for `doc` in the server's database.
async fn rows(server: &ServerProcess, table: &str, doc: &str) -> i64 {
    db_probe::rows_of(&server.db_path(), table, doc).await
}

/// The `content` text of a document state.
fn text_of(state: &[u8]) -> String {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text(quire_client::CONTENT);
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(state).unwrap())
        .unwrap();
    let txn = doc.transact();
    text.get_string(&txn)
}

#[tokio::test]
async fn the_command_line_lists_names_restores_and_empties_the_trash() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (alice, _a) = client(&server, &token).await;
    let doc = open_synced(&alice, "cli/doc", Access::Write).await;
    append(&doc, "version one");
    until_saved(&alice, &doc, DEADLINE).await;
    let out = stdout_of(server.command(&["version", "cli/doc", "--name", "From the shell"]));
    assert!(
        out.contains("named") && out.contains("\"From the shell\""),
        "{out}"
    );
    let id: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
    append(&doc, " and two");
    until_saved(&alice, &doc, DEADLINE).await;
    let listed = stdout_of(server.command(&["versions", "cli/doc"]));
    assert!(
        listed.contains("From the shell") && listed.contains("command line"),
        "{listed}"
    );

    // A restore or a trash from the command line would race the running server: refused.
    let refused = server.command(&["restore", "cli/doc", &id.to_string()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("a server is serving"));
    assert!(!server.command(&["trash", "cli/doc"]).status.success());
    alice.close().await;

    server.terminate();
    let restored = stdout_of(server.command(&["restore", "cli/doc", &id.to_string()]));
    assert!(restored.contains("restored `cli/doc`"), "{restored}");
    let text = stdout_of(server.command(&["export", "cli/doc"]));
    assert_eq!(text, "version one");
    let listed = stdout_of(server.command(&["versions", "cli/doc"]));
    assert!(listed.contains("before-restore"), "{listed}");

    assert!(stdout_of(server.command(&["trash"])).contains("the trash is empty"));
    stdout_of(server.command(&["trash", "cli/doc"]));
    assert!(stdout_of(server.command(&["trash"])).contains("cli/doc  trashed"));
    stdout_of(server.command(&["untrash", "cli/doc"]));
    stdout_of(server.command(&["trash", "cli/doc"]));
    // Not expired yet: kept; with no retention left: purged.
    assert!(stdout_of(server.command(&["purge"])).contains("purged 0 document(s)"));
    let purged = stdout_of(server.command(&["purge", "--trash-retention-days", "0"]));
    assert!(purged.contains("deleted `cli/doc` for good"), "{purged}");
    assert!(!stdout_of(server.command(&["list"])).contains("cli/doc"));
}

/// The next REPLY on `channel`, read as an answer to `op`.
async fn expect_reply(
    client: &mut quire_tests::raw_client::RawClient,
    channel: quire_protocol::ChannelId,
    op: u8,
) -> quire_protocol::request::Reply {
    use quire_protocol::{Frame, Message};
    use quire_tests::raw_client::Incoming;
    loop {
        match client.recv().await {
            Incoming::Frame(Frame {
                channel: c,
                message: Message::Reply(body),
            }) if c == channel => {
                return quire_protocol::request::Reply::decode(&body, op).expect("a reply")
            }
            Incoming::Closed(code, reason) => panic!("closed ({code} {reason}) before a reply"),
            Incoming::Frame(_) => continue,
        }
    }
}

#[tokio::test]
async fn requests_get_the_answers_the_spec_gives_for_bad_ones() {
    use quire_protocol::frame::kind;
    use quire_protocol::request::{op, Request, RequestOp};
    use quire_protocol::{Access, ChannelId, Message};
    use quire_tests::raw_client::RawClient;

    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    let (control, doc) = (ChannelId::CONTROL, ChannelId(1));
    let ask = |id: u32, op: RequestOp| Message::Request(Request::new(id, op).encode());

    // An unknown operation, and a version operation asked on channel 0: 4400, the
    // connection carries on.
    client
        .send_frame(control, kind::REQUEST, &[0x07, 0x7f])
        .await;
    let reply = expect_reply(&mut client, control, 0x7f).await;
    assert_eq!((reply.id, reply.outcome.unwrap_err().0), (7, 4400));
    client.send(control, ask(8, RequestOp::ListVersions)).await;
    let reply = expect_reply(&mut client, control, op::LIST_VERSIONS).await;
    assert_eq!(reply.outcome.unwrap_err().0, 4400);
    // On a channel that is not open: CLOSE 4404, as for any frame.
    client.send(doc, ask(9, RequestOp::ListVersions)).await;
    assert_eq!(client.expect_channel_close(doc).await, 4404);

    // On an open channel, a trash operation is asked on the wrong channel: 4400.
    assert_eq!(
        client.open(ChannelId(2), "req/doc", Access::Write).await,
        Ok(Access::Write)
    );
    let trash = RequestOp::Trash {
        doc: "req/doc".into(),
    };
    client.send(ChannelId(2), ask(10, trash)).await;
    let reply = expect_reply(&mut client, ChannelId(2), op::TRASH).await;
    assert_eq!(reply.outcome.unwrap_err().0, 4400);
    // Many requests at once: at most 8 are in flight, the others are refused with 4429 and
    // every one is answered.
    for id in 100..140 {
        client
            .send(ChannelId(2), ask(id, RequestOp::ListVersions))
            .await;
    }
    let mut answered = 0;
    while answered < 40 {
        let reply = expect_reply(&mut client, ChannelId(2), op::LIST_VERSIONS).await;
        assert!((100..140).contains(&reply.id));
        if let Err((code, _)) = reply.outcome {
            assert_eq!(code, 4429);
        }
        answered += 1;
    }

    // A request whose ID cannot be read closes the connection with 1002, and so does a REPLY
    // from a client.
    client.send_frame(control, kind::REQUEST, &[0x80]).await;
    assert_eq!(client.expect_close().await, 1002);
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    client.send_frame(control, kind::REPLY, &[0x01, 0x00]).await;
    assert_eq!(client.expect_close().await, 1002);
}
