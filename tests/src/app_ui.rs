//! The desktop app's window seen through WebDriver: waits on what it shows (connection,
//! document status, editor text), opening and typing in documents, the app's dialogs, and a
//! headless peer editing next to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quire_client::{Access, Client, DocHandle, MemoryStore};
use serde_json::json;
use yrs::{Map, Transact};

use crate::client_util::config;
use crate::server_process::ServerProcess;
use crate::webdriver::WebDriver;

/// How long any one thing the app should show may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// WebDriver's key codes.
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";
/// Control+End (Control pressed, End, then every modifier released): the end of the text.
pub const TEXT_END: &str = "\u{E009}\u{E010}\u{E000}";

/// The workspace index's document (its map "documents": id to title).
pub const INDEX_DOC: &str = "workspace/index";

/// A headless peer that lists `docs` in the workspace index and opens them.
pub async fn peer(
    server: &ServerProcess,
    token: &str,
    docs: &[(&str, &str)],
) -> (Client, Vec<DocHandle>) {
    let (client, _index, handles) = peer_with_index(server, token, docs).await;
    (client, handles)
}

/// [`peer`], keeping the workspace index open to watch what the app does to it.
pub async fn peer_with_index(
    server: &ServerProcess,
    token: &str,
    docs: &[(&str, &str)],
) -> (Client, DocHandle, Vec<DocHandle>) {
    let client = Client::start(
        config(server, Some(token.to_owned())),
        Arc::new(MemoryStore::default()),
    );
    let index = client.open(INDEX_DOC, Access::Write).await.unwrap();
    {
        let map = index.doc().get_or_insert_map("documents");
        let mut txn = index.doc().transact_mut();
        for (id, title) in docs {
            map.insert(&mut txn, *id, *title);
        }
    }
    let mut handles = Vec::new();
    for (id, _) in docs {
        handles.push(client.open(id, Access::Write).await.unwrap());
    }
    crate::client_util::until_saved(&client, &index, DEADLINE).await;
    (client, index, handles)
}

/// Waits until the peer's copy of a document satisfies `done`.
pub async fn until_peer_text(doc: &DocHandle, what: &str, done: impl Fn(&str) -> bool) {
    let start = tokio::time::Instant::now();
    while !done(&doc.text()) {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; the peer has {:?}",
            doc.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the status bar's document status satisfies `done`.
pub async fn until_doc_status(app: &WebDriver, what: &str, done: impl Fn(&str) -> bool) {
    until_script(app, DOC_STATUS, what, done).await;
}

const DOC_STATUS: &str =
    "const e = document.querySelector('[data-testid=doc-status]'); return e ? e.textContent : '';";
const EDITOR_TEXT: &str = "const e = document.querySelector('.pane:not([hidden]) .cm-content'); return e ? e.innerText : '';";
const CONNECTION_KIND: &str = "const e = document.querySelector('[data-testid=connection-status]'); return e ? (e.dataset.kind || '') : '';";

/// The text the active tab's editor shows (markup the live preview hides is not in it).
pub async fn editor_text(app: &WebDriver) -> String {
    script_text(app, EDITOR_TEXT).await
}

/// Waits until the active editor's text satisfies `done`.
pub async fn until_app_text(app: &WebDriver, what: &str, done: impl Fn(&str) -> bool) {
    until_script(app, EDITOR_TEXT, what, done).await;
}

/// The kind of connection state the status bar shows (`connected`, `untrusted`, …).
pub async fn connection_kind(app: &WebDriver) -> String {
    script_text(app, CONNECTION_KIND).await
}

/// Waits until the status bar shows a connection state of `kind`.
pub async fn until_connection(app: &WebDriver, kind: &str) {
    let what = format!("the status bar to show {kind}");
    until_script(app, CONNECTION_KIND, &what, |now| now == kind).await;
}

/// What `script` returns, as a string ("" for anything else).
async fn script_text(app: &WebDriver, script: &str) -> String {
    app.execute(script)
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Opens `doc` from the sidebar and waits for its editor.
pub async fn open_in_app(app: &WebDriver, doc: &str) {
    let item = app
        .wait_for(
            &format!("[data-testid=doc-item][data-doc='{doc}'] .title"),
            DEADLINE,
        )
        .await;
    app.click(&item).await.unwrap();
    app.wait_for(&format!(".pane[data-doc='{doc}'] .cm-content"), DEADLINE)
        .await;
}

/// Types `text` into `doc`'s editor (the caret goes to the end first).
pub async fn type_in_app(app: &WebDriver, doc: &str, text: &str) {
    let editor = app
        .wait_for(&format!(".pane[data-doc='{doc}'] .cm-content"), DEADLINE)
        .await;
    app.send_keys(&editor, text).await.unwrap();
}

/// The workspace index as a peer sees it: document id to title.
pub fn index_titles(index: &DocHandle) -> BTreeMap<String, String> {
    let map = index.doc().get_or_insert_map("documents");
    let txn = index.doc().transact();
    map.iter(&txn)
        .map(|(id, title)| (id.to_string(), title.to_string(&txn)))
        .collect()
}

/// Waits until the peer's copy of the workspace index satisfies `done`.
pub async fn until_index(
    index: &DocHandle,
    what: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    let start = tokio::time::Instant::now();
    loop {
        let titles = index_titles(index);
        if done(&titles) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; the peer's index has {titles:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `script` (which returns a string) until `done` holds for its value.
pub async fn until_script(
    app: &WebDriver,
    script: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = tokio::time::Instant::now();
    loop {
        let value = script_text(app, script).await;
        if done(&value) {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; the page gives {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The titles in the sidebar, in order.
pub async fn sidebar_titles(app: &WebDriver) -> Vec<String> {
    let script = "return JSON.stringify(Array.from(document.querySelectorAll('[data-testid=doc-item] .title')).map(e => e.textContent));";
    let value = app.execute(script).await.unwrap_or_default();
    serde_json::from_str(value.as_str().unwrap_or("[]")).unwrap_or_default()
}

/// Waits for the element `css` and clicks it.
pub async fn click(app: &WebDriver, css: &str) {
    let element = app.wait_for(css, DEADLINE).await;
    app.click(&element).await.unwrap();
}

/// A screenshot's path next to `base`: …/screenshot.png with "-dark" → …/screenshot-dark.png.
pub fn with_suffix(base: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    base.with_file_name(format!("{stem}{suffix}.png"))
}

/// Whether one of the app's dialogs is open.
pub async fn dialog_open(app: &WebDriver) -> bool {
    app.execute("return document.querySelector('[data-testid=dialog]') !== null;")
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Waits until no dialog is open.
pub async fn until_dialog_closed(app: &WebDriver) {
    let start = tokio::time::Instant::now();
    while dialog_open(app).await {
        assert!(start.elapsed() < DEADLINE, "the dialog never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Empties the open dialog's field and types `keys` into it (end with [`ENTER`] to submit).
pub async fn type_in_dialog(app: &WebDriver, keys: &str) {
    let input = app.wait_for("[data-testid=dialog-input]", DEADLINE).await;
    app.execute("document.querySelector('[data-testid=dialog-input]').value = ''; return true;")
        .await
        .unwrap();
    app.send_keys(&input, keys).await.unwrap();
}

/// The awareness state of a peer named `name` whose cursor sits before the `at`-th character
/// of its document's text (as y-codemirror.next reads it: relative positions in Yjs's JSON).
pub fn cursor_awareness(doc: &DocHandle, name: &str, color: &str, at: u32) -> String {
    use yrs::{Assoc, IndexedSequence};
    let text = doc.doc().get_or_insert_text(quire_client::CONTENT);
    let txn = doc.doc().transact();
    let position = text
        .sticky_index(&txn, at, Assoc::After)
        .expect("a position inside the text");
    json!({
        "user": {"name": name, "color": color, "colorLight": format!("{color}33")},
        "cursor": {"anchor": position, "head": position},
    })
    .to_string()
}
