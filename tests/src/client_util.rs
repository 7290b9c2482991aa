//! Helpers for driving `quire-client` against a test server.

use std::time::Duration;

use quire_client::{Access, Client, ClientConfig, ConnectionState, DocHandle, DocState, Trust};
use tokio::sync::watch;
use yrs::{Text, Transact};

use crate::server_process::ServerProcess;

/// A client configuration for `server`, pinning its dev certificate's fingerprint.
pub fn config(server: &ServerProcess, token: Option<String>) -> ClientConfig {
    let mut config = ClientConfig::new(
        server.url(),
        Trust::Pinned(server.fingerprint.clone()),
        token,
    );
    config.client_name = "quire-tests".into();
    config
}

/// A client of `server` with `token`, its edits kept in memory.
pub fn start_client(server: &ServerProcess, token: &str) -> Client {
    Client::start(
        config(server, Some(token.to_owned())),
        std::sync::Arc::new(quire_client::MemoryStore::default()),
    )
}

/// Waits until the watched value satisfies `done`, or fails after `deadline`.
pub async fn until_state<T: Clone + std::fmt::Debug>(
    rx: &mut watch::Receiver<T>,
    what: &str,
    deadline: Duration,
    done: impl Fn(&T) -> bool,
) -> T {
    let result = tokio::time::timeout(deadline, async {
        rx.wait_for(|value| done(value))
            .await
            .map(|value| value.clone())
    })
    .await;
    match result {
        Ok(Ok(value)) => value,
        Ok(Err(_)) => panic!("state channel closed waiting for {what}"),
        Err(_) => panic!(
            "timed out after {deadline:?} waiting for {what}; last: {:?}",
            *rx.borrow()
        ),
    }
}

/// A client configuration for `server` reached at `url` (through a proxy, say), still pinning
/// the server's certificate; the URL's host must be 127.0.0.1 or localhost.
pub fn config_at(server: &ServerProcess, url: String, token: Option<String>) -> ClientConfig {
    let mut config = config(server, token);
    config.url = url;
    config
}

/// Appends `text` to the document's content in one transaction.
pub fn append(doc: &DocHandle, text: &str) {
    let content = doc.doc().get_or_insert_text(quire_client::CONTENT);
    let mut txn = doc.doc().transact_mut();
    let len = content.len(&txn);
    content.insert(&mut txn, len, text);
}

/// Polls the document's text until `done` holds, or fails after `deadline`.
pub async fn until_text(
    doc: &DocHandle,
    what: &str,
    deadline: Duration,
    done: impl Fn(&str) -> bool,
) {
    crate::wait::until(what, deadline, || {
        let ok = done(&doc.text());
        std::future::ready(ok.then_some(()))
    })
    .await
}

/// Waits until every local edit of the document made so far is durable on the server.
///
/// An edit reaches the client's driver as a queued command, so right after an edit the state
/// may still say "saved" from before. Opening the document again (which returns the same
/// handle) queues behind that command: once it answers, the state accounts for every edit.
pub async fn until_saved(client: &Client, doc: &DocHandle, deadline: Duration) {
    client
        .open(doc.id().as_str(), Access::Write)
        .await
        .expect("reopening an open document");
    until_state(
        &mut doc.state(),
        "saved on server",
        deadline,
        DocState::is_saved,
    )
    .await;
}

/// Waits until the client is connected.
pub async fn until_connected(client: &Client, deadline: Duration) {
    until_state(&mut client.state(), "connected", deadline, |s| {
        matches!(s, ConnectionState::Connected { .. })
    })
    .await;
}

/// How many times `marker` occurs in `text`.
pub fn occurrences(text: &str, marker: &str) -> usize {
    text.matches(marker).count()
}
