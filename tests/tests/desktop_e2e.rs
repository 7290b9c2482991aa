//! The real desktop app (tauri-driver + WebKitWebDriver under Xvfb) next to a headless
//! quire-client peer and the real server. Run by scripts/test.sh, which installs the
//! prerequisites and sets QUIRE_E2E_DESKTOP=1. The apps run one at a time (WebKit is heavy).

use std::time::Duration;

use quire_tests::app_ui::{
    open_in_app, peer, type_in_app, until_app_text, until_connection, until_doc_status,
    until_peer_text, DEADLINE,
};
use quire_tests::client_util::append;
use quire_tests::desktop::{enabled, settings, Desktop};
use quire_tests::http_probe::{get, metric};
use quire_tests::server_process::ServerProcess;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn metrics(server: &ServerProcess) -> String {
    get(server.addr, server.tls(), "/metrics").await.body
}

#[tokio::test]
async fn typing_reaches_the_peer_and_the_peer_reaches_the_app() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, docs) = peer(&server, &token, &[("doc/e2e", "Meeting notes")]).await;
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/e2e").await;

    type_in_app(&app, "doc/e2e", "# Typed in the app").await;
    until_peer_text(&docs[0], "the app's text at the peer", |t| {
        t.contains("# Typed in the app")
    })
    .await;
    docs[0].set_awareness(Some(
        r##"{"user":{"name":"Grace","color":"#2da44e","colorLight":"#2da44e33"}}"##,
    ));
    append(&docs[0], "\nWritten by the peer");
    until_app_text(&app, "the peer's text in the app", |t| {
        t.contains("Written by the peer")
    })
    .await;
    let title = app.execute("return document.title").await.unwrap();
    assert_eq!(title.as_str(), Some("Meeting notes — Quire"));

    // Who is in the document: the peer, by name.
    let start = tokio::time::Instant::now();
    while !app.text_of("[data-testid=people]").await.contains("Grace") {
        assert!(
            start.elapsed() < DEADLINE,
            "the peer never appeared in the status bar"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    desktop.quit(app).await;
}

#[tokio::test]
async fn two_tabs_share_one_connection() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (peer_client, _docs) =
        peer(&server, &token, &[("doc/one", "One"), ("doc/two", "Two")]).await;
    peer_client.close().await;
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/one").await;
    open_in_app(&app, "doc/two").await;
    type_in_app(&app, "doc/two", "second tab").await;

    // One connection carries the workspace index and both tabs.
    let start = tokio::time::Instant::now();
    loop {
        let text = metrics(&server).await;
        let (connections, channels) = (
            metric(&text, "quire_connections"),
            metric(&text, "quire_channels"),
        );
        if connections == Some(1.0) && channels == Some(3.0) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "expected 1 connection and 3 channels, got {connections:?} / {channels:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Quit as File → Quit does; the app flushes, then says goodbye with 1001 (going away),
    // not a dropped connection.
    let _ = app
        .execute("window.__TAURI_INTERNALS__.invoke('request_quit'); return true;")
        .await;
    let start = tokio::time::Instant::now();
    loop {
        let going_away = metric(&metrics(&server).await, "quire_closes_total{code=\"1001\"}");
        if going_away == Some(1.0) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the app did not close with 1001 when quitting: {going_away:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    desktop.quit(app).await;
}

#[tokio::test]
async fn server_killed_while_typing_loses_no_keystroke() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, docs) = peer(&server, &token, &[("doc/outage", "Outage")]).await;
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/outage").await;
    type_in_app(&app, "doc/outage", "before ").await;
    until_peer_text(&docs[0], "first keystrokes", |t| t.contains("before")).await;

    server.kill9();
    until_connection(&app, "reconnecting").await;
    type_in_app(&app, "doc/outage", "during the outage ").await;
    server.restart();
    until_connection(&app, "connected").await;
    type_in_app(&app, "doc/outage", "after").await;
    until_peer_text(&docs[0], "every keystroke", |t| {
        ["before ", "during the outage ", "after"]
            .iter()
            .all(|part| t.contains(part))
    })
    .await;
    desktop.quit(app).await;
}

#[tokio::test]
async fn quitting_offline_keeps_edits_and_syncs_them_later() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let (_peer, docs) = peer(&server, &token, &[("doc/offline", "Offline")]).await;
    let mut desktop = Desktop::new(Some(settings(&server, &token, "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "connected").await;
    open_in_app(&app, "doc/offline").await;
    server.kill9();
    until_connection(&app, "reconnecting").await;
    type_in_app(&app, "doc/offline", "kept while offline").await;
    until_doc_status(&app, "the edit kept locally", |s| {
        s.contains("kept locally")
    })
    .await;
    desktop.quit(app).await;

    let app = desktop.launch().await;
    open_in_app(&app, "doc/offline").await;
    until_app_text(&app, "the offline edit after reopening", |t| {
        t.contains("kept while offline")
    })
    .await;
    server.restart();
    until_connection(&app, "connected").await;
    until_peer_text(&docs[0], "the offline edit at the peer", |t| {
        t.contains("kept while offline")
    })
    .await;
    desktop.quit(app).await;
}

#[tokio::test]
async fn a_wrong_token_shows_the_auth_error_without_a_retry_storm() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let mut desktop = Desktop::new(Some(settings(&server, "wrong-token", "Ada")));
    let app = desktop.launch().await;
    until_connection(&app, "authFailed").await;
    let status = app.text_of("[data-testid=connection-status]").await;
    assert!(
        status.contains("Sign-in failed"),
        "status bar says {status:?}"
    );
    app.wait_for("[data-testid=fix-settings]", DEADLINE).await;

    let refused = |text: &str| metric(text, "quire_refused_upgrades_total").unwrap_or(0.0);
    let first = refused(&metrics(&server).await);
    assert_eq!(first, 1.0);
    // A peer's full round trip leaves ample time for retries; there must be none.
    let token = server.token(&["*"], true, "1h");
    let (_peer, docs) = peer(&server, &token, &[("doc/x", "X")]).await;
    append(&docs[0], "x");
    quire_tests::client_util::until_state(&mut docs[0].state(), "saved", DEADLINE, |s| {
        s.is_saved()
    })
    .await;
    assert_eq!(
        refused(&metrics(&server).await),
        first,
        "the app retried with a rejected token"
    );
    desktop.quit(app).await;
}
