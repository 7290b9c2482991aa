//! quire-client against the real server: convergence, outages, offline restarts, auth.

use std::sync::Arc;
use std::time::Duration;

use quire_client::{Access, Client, ConnectionState, DocState, MemoryStore, SqliteLocalStore};
use quire_tests::client_util::{append, config, until_saved, until_state, until_text};
use quire_tests::server_process::ServerProcess;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn clients_converge_and_report_saved() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let a = Client::start(
        config(&server, Some(token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let b = Client::start(
        config(&server, Some(token)),
        Arc::new(MemoryStore::default()),
    );
    let doc_a = a.open("notes", Access::Write).await.unwrap();
    let doc_b = b.open("notes", Access::Write).await.unwrap();
    until_state(&mut a.state(), "connected", DEADLINE, |s| {
        matches!(s, ConnectionState::Connected { .. })
    })
    .await;
    append(&doc_a, "hello ");
    append(&doc_b, "world ");
    until_saved(&a, &doc_a, DEADLINE).await;
    until_saved(&b, &doc_b, DEADLINE).await;
    until_text(&doc_a, "both edits at a", DEADLINE, |t| {
        t.contains("hello") && t.contains("world")
    })
    .await;
    until_text(&doc_b, "both edits at b", DEADLINE, |t| {
        t.contains("hello") && t.contains("world")
    })
    .await;
    assert_eq!(doc_a.text(), doc_b.text());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn kill9_and_restart_loses_nothing() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let a = Client::start(
        config(&server, Some(token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let b = Client::start(
        config(&server, Some(token)),
        Arc::new(MemoryStore::default()),
    );
    let doc_a = a.open("outage", Access::Write).await.unwrap();
    let doc_b = b.open("outage", Access::Write).await.unwrap();
    append(&doc_a, "before ");
    until_text(&doc_b, "first edit", DEADLINE, |t| t.contains("before")).await;

    server.kill9();
    until_state(&mut a.state(), "a reconnecting", DEADLINE, |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    for i in 0..10 {
        append(&doc_a, &format!("a-offline-{i} "));
        append(&doc_b, &format!("b-offline-{i} "));
    }
    until_state(&mut doc_a.state(), "a's edits pending", DEADLINE, |s| {
        matches!(s, DocState::Offline { pending: 1.. })
    })
    .await;
    server.restart();

    until_saved(&a, &doc_a, DEADLINE).await;
    until_saved(&b, &doc_b, DEADLINE).await;
    for i in 0..10 {
        let (a_mark, b_mark) = (format!("a-offline-{i}"), format!("b-offline-{i}"));
        until_text(&doc_a, "b's outage edits at a", DEADLINE, |t| {
            t.contains(&b_mark)
        })
        .await;
        until_text(&doc_b, "a's outage edits at b", DEADLINE, |t| {
            t.contains(&a_mark)
        })
        .await;
    }
    assert_eq!(doc_a.text(), doc_b.text());
}

#[tokio::test]
async fn a_client_restarted_offline_keeps_and_uploads_its_edits() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("local.db");

    let store = Arc::new(SqliteLocalStore::open(&db).await.unwrap());
    let a = Client::start(config(&server, Some(token.clone())), store.clone());
    let doc = a.open("offline", Access::Write).await.unwrap();
    append(&doc, "online ");
    until_saved(&a, &doc, DEADLINE).await;
    server.kill9();
    append(&doc, "written offline");
    until_state(&mut doc.state(), "pending offline", DEADLINE, |s| {
        matches!(s, DocState::Offline { pending: 1.. })
    })
    .await;
    a.shutdown().await;
    store.close().await;

    // The app starts again, still offline: its edit is there.
    let store = Arc::new(SqliteLocalStore::open(&db).await.unwrap());
    let a = Client::start(config(&server, Some(token.clone())), store);
    let doc = a.open("offline", Access::Write).await.unwrap();
    assert_eq!(doc.text(), "online written offline");
    assert!(matches!(
        *doc.state().borrow(),
        DocState::Offline { pending: 1 }
    ));

    server.restart();
    until_saved(&a, &doc, DEADLINE).await;
    let b = Client::start(
        config(&server, Some(token)),
        Arc::new(MemoryStore::default()),
    );
    let doc_b = b.open("offline", Access::Write).await.unwrap();
    until_text(&doc_b, "the offline edit on the server", DEADLINE, |t| {
        t == "online written offline"
    })
    .await;
}

#[tokio::test]
async fn auth_failure_stops_retries_until_a_new_token() {
    let server = ServerProcess::start(&[]);
    let client = Client::start(
        config(&server, Some("not-a-token".into())),
        Arc::new(MemoryStore::default()),
    );
    let doc = client.open("secret", Access::Write).await.unwrap();
    until_state(&mut client.state(), "auth failed", DEADLINE, |s| {
        matches!(s, ConnectionState::AuthFailed { .. })
    })
    .await;
    let metrics_url = server.addr;
    let refused = || async {
        let response = quire_tests::http_probe::get(metrics_url, server.tls(), "/metrics").await;
        quire_tests::http_probe::metric(&response.body, "quire_refused_upgrades_total")
            .unwrap_or(0.0)
    };
    let first = refused().await;
    assert_eq!(first, 1.0);
    // Another client's full round trip gives a failing one ample time to retry; it must not.
    let token = server.token(&["*"], true, "1h");
    let other = Client::start(
        config(&server, Some(token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let other_doc = other.open("secret", Access::Write).await.unwrap();
    append(&other_doc, "x");
    until_saved(&other, &other_doc, DEADLINE).await;
    assert_eq!(
        refused().await,
        first,
        "a client with a rejected token must not retry on its own"
    );
    assert!(matches!(
        *client.state().borrow(),
        ConnectionState::AuthFailed { .. }
    ));

    client.set_token(Some(token));
    until_state(&mut client.state(), "connected", DEADLINE, |s| {
        matches!(s, ConnectionState::Connected { .. })
    })
    .await;
    until_text(&doc, "the document after auth", DEADLINE, |t| t == "x").await;
}
