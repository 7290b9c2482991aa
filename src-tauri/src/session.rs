//! The app's live state: the settings, the quire-client connection built from them, the
//! documents the webview has open, and the tasks that forward their changes to the webview.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use quire_client::{Access, Client, ClientConfig, DocHandle, SqliteLocalStore, Trust};
use tauri::{AppHandle, Emitter};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use yrs::{Origin, ReadTxn, StateVector, Transact};

use crate::dto::{ConnectionDto, DocEvent, DocStateDto};
use crate::settings::Settings;

/// Origin of transactions that apply the webview's edits to the Rust replica.
pub const FROM_WEBVIEW: &str = "webview";

#[derive(Debug)]
struct OpenDoc {
    handle: DocHandle,
    forwarders: Vec<JoinHandle<()>>,
}

impl Drop for OpenDoc {
    fn drop(&mut self) {
        for task in &self.forwarders {
            task.abort();
        }
        let _ = self.handle.doc().unobserve_update_v1("quire-desktop");
    }
}

#[derive(Debug, Default)]
struct Inner {
    settings: Option<Settings>,
    client: Option<Client>,
    connection_forwarder: Option<JoinHandle<()>>,
    docs: HashMap<String, OpenDoc>,
}

#[derive(Debug)]
pub struct Session {
    pub config_dir: PathBuf,
    store: Arc<SqliteLocalStore>,
    inner: Mutex<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Client(#[from] quire_client::ClientError),
    #[error("the document is not open")]
    NotOpen,
    #[error("not set up yet: save the settings first")]
    NoClient,
    #[error("the update from the editor is not valid: {0}")]
    BadUpdate(String),
}

impl Session {
    pub fn new(
        config_dir: PathBuf,
        store: Arc<SqliteLocalStore>,
        settings: Option<Settings>,
    ) -> Self {
        Self {
            config_dir,
            store,
            inner: Mutex::new(Inner {
                settings,
                ..Inner::default()
            }),
        }
    }

    pub async fn settings(&self) -> Option<Settings> {
        self.inner.lock().await.settings.clone()
    }

    pub async fn connection(&self) -> ConnectionDto {
        let inner = self.inner.lock().await;
        match &inner.client {
            Some(client) => ConnectionDto::from(&*client.state().borrow()),
            None => ConnectionDto::Closed,
        }
    }

    /// Starts (or restarts) the client for `settings`; documents open in the webview are
    /// reopened on the new client.
    pub async fn apply_settings(
        &self,
        app: &AppHandle,
        settings: Settings,
    ) -> Result<(), SessionError> {
        let mut inner = self.inner.lock().await;
        if let Some(old) = inner.client.take() {
            old.close().await;
        }
        if let Some(task) = inner.connection_forwarder.take() {
            task.abort();
        }
        let config = client_config(&settings);
        let client = Client::start(config, self.store.clone());
        let mut states = client.state();
        let app_for_states = app.clone();
        inner.connection_forwarder = Some(tokio::spawn(async move {
            loop {
                let dto = ConnectionDto::from(&*states.borrow_and_update());
                let _ = app_for_states.emit("connection-state", dto);
                if states.changed().await.is_err() {
                    return;
                }
            }
        }));
        let reopen: Vec<String> = inner.docs.keys().cloned().collect();
        inner.docs.clear();
        inner.client = Some(client.clone());
        inner.settings = Some(settings);
        for doc in reopen {
            let handle = client.open(&doc, Access::Write).await?;
            let open = forward(app, &doc, handle);
            inner.docs.insert(doc, open);
        }
        Ok(())
    }

    pub async fn trust(&self, fingerprint: String) -> Option<Settings> {
        let mut inner = self.inner.lock().await;
        let settings = inner.settings.as_mut()?;
        settings.trusted_fingerprint = Some(fingerprint.clone());
        if let Some(client) = &inner.client {
            client.set_trust(Trust::Pinned(fingerprint));
        }
        inner.settings.clone()
    }

    /// Opens a document for the webview; returns its full local state.
    pub async fn open(&self, app: &AppHandle, doc: &str) -> Result<Vec<u8>, SessionError> {
        let mut inner = self.inner.lock().await;
        let client = inner.client.clone().ok_or(SessionError::NoClient)?;
        if !inner.docs.contains_key(doc) {
            let handle = client.open(doc, Access::Write).await?;
            let open = forward(app, doc, handle);
            inner.docs.insert(doc.to_owned(), open);
        }
        let handle = &inner.docs[doc].handle;
        let state = handle
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        Ok(state)
    }

    pub async fn close(&self, doc: &str) {
        let removed = self.inner.lock().await.docs.remove(doc);
        if let Some(open) = removed {
            open.handle.clone().close().await;
        }
    }

    /// The handle of a document the webview has open (for requests about it).
    pub(crate) async fn handle(&self, doc: &str) -> Result<DocHandle, SessionError> {
        let inner = self.inner.lock().await;
        let open = inner.docs.get(doc).ok_or(SessionError::NotOpen)?;
        Ok(open.handle.clone())
    }

    /// The running client (for requests about documents by ID).
    pub(crate) async fn client(&self) -> Result<Client, SessionError> {
        self.inner
            .lock()
            .await
            .client
            .clone()
            .ok_or(SessionError::NoClient)
    }

    /// The text of an open document, as the Rust replica holds it.
    pub async fn text(&self, doc: &str) -> Result<String, SessionError> {
        Ok(self.handle(doc).await?.text())
    }

    /// Applies an edit made in the webview to the Rust replica (which stores and sends it).
    pub async fn push_update(&self, doc: &str, update: &[u8]) -> Result<(), SessionError> {
        let inner = self.inner.lock().await;
        let open = inner.docs.get(doc).ok_or(SessionError::NotOpen)?;
        let update = quire_protocol::ysync::decode_update(update)
            .map_err(|e| SessionError::BadUpdate(e.to_string()))?;
        let mut txn = open.handle.doc().transact_mut_with(FROM_WEBVIEW);
        let applied = txn
            .apply_update(update)
            .map_err(|e| SessionError::BadUpdate(e.to_string()));
        drop(txn);
        applied
    }

    pub async fn set_awareness(
        &self,
        doc: &str,
        state: Option<String>,
    ) -> Result<(), SessionError> {
        let inner = self.inner.lock().await;
        let open = inner.docs.get(doc).ok_or(SessionError::NotOpen)?;
        open.handle.set_awareness(state.as_deref());
        Ok(())
    }

    /// The app is quitting: local data is already stored; close the connection with 1001.
    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        inner.docs.clear();
        if let Some(client) = inner.client.take() {
            client.shutdown().await;
        }
    }
}

fn client_config(settings: &Settings) -> ClientConfig {
    if settings.local_only {
        return ClientConfig::new("", Trust::WebPki, None);
    }
    let trust = match &settings.trusted_fingerprint {
        Some(fingerprint) => Trust::Pinned(fingerprint.clone()),
        None => Trust::WebPki,
    };
    let mut config = ClientConfig::new(
        settings.server_url.trim(),
        trust,
        Some(settings.token.trim().to_owned()),
    );
    config.client_name = format!("quire-desktop/{}", env!("CARGO_PKG_VERSION"));
    config
}

/// Forwards a document's remote updates, sync state and presence to the webview.
fn forward(app: &AppHandle, doc: &str, handle: DocHandle) -> OpenDoc {
    let webview: Origin = FROM_WEBVIEW.into();
    let app_for_updates = app.clone();
    let doc_id = doc.to_owned();
    let _ = handle
        .doc()
        .observe_update_v1("quire-desktop", move |txn, event| {
            if txn.origin() != Some(&webview) {
                let value = base64_encode(&event.update);
                let _ = app_for_updates.emit(
                    "doc-update",
                    DocEvent {
                        doc: doc_id.clone(),
                        value,
                    },
                );
            }
        });
    let mut states = handle.state();
    let (app_states, doc_states) = (app.clone(), doc.to_owned());
    let state_task = tokio::spawn(async move {
        loop {
            let value = DocStateDto::from(&*states.borrow_and_update());
            let _ = app_states.emit(
                "doc-state",
                DocEvent {
                    doc: doc_states.clone(),
                    value,
                },
            );
            if states.changed().await.is_err() {
                return;
            }
        }
    });
    let mut others = handle.others();
    let (app_others, doc_others) = (app.clone(), doc.to_owned());
    let awareness_task = tokio::spawn(async move {
        while others.changed().await.is_ok() {
            let value = others
                .borrow_and_update()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let value: HashMap<String, String> = value;
            let _ = app_others.emit(
                "awareness",
                DocEvent {
                    doc: doc_others.clone(),
                    value,
                },
            );
        }
    });
    OpenDoc {
        handle,
        forwarders: vec![state_task, awareness_task],
    }
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
