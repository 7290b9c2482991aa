//! A document handle: the local yrs replica the application edits, its sync state, and its
//! awareness. Local edits are noticed by an update observer and handed to the driver, which
//! stores them locally and sends them; remote updates are applied with [`REMOTE_ORIGIN`] so
//! the observer does not send them back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use quire_protocol::varint::{write_string, write_varint};
use quire_protocol::{Access, DocId};
use tokio::sync::{mpsc, oneshot, watch};
use yrs::{Doc, GetString, Origin, Transact};

use crate::driver::Command;
use crate::error::ClientError;
use crate::state::DocState;

/// Origin of transactions that apply what came from the server.
pub const REMOTE_ORIGIN: &str = "quire-remote";
/// The shared text every Quire editor binds to.
pub const CONTENT: &str = "content";

/// State shared between a handle and the driver.
#[derive(Debug)]
pub(crate) struct DocShared {
    pub id: DocId,
    pub doc: Doc,
    pub state: watch::Sender<DocState>,
    pub granted: watch::Sender<Option<Access>>,
    pub local_awareness: Mutex<LocalAwareness>,
    pub others: watch::Sender<BTreeMap<u64, String>>,
    /// Local transactions that changed the replica, counted by the update observer.
    pub local_edits: AtomicU64,
}

/// This client's own awareness entry.
#[derive(Debug, Default)]
pub(crate) struct LocalAwareness {
    pub clock: u32,
    pub json: Option<String>,
}

impl DocShared {
    pub(crate) fn new(id: DocId, doc: Doc, initial: DocState) -> Arc<Self> {
        Arc::new(Self {
            id,
            doc,
            state: watch::channel(initial).0,
            granted: watch::channel(None).0,
            local_awareness: Mutex::new(LocalAwareness::default()),
            others: watch::channel(BTreeMap::new()).0,
            local_edits: AtomicU64::new(0),
        })
    }

    /// The y-protocols awareness update for our current entry (a removal when `json` is None).
    pub(crate) fn awareness_update(&self) -> Vec<u8> {
        let local = self.local_awareness.lock();
        encode_awareness(
            self.doc.client_id().get(),
            local.clock,
            local.json.as_deref().unwrap_or("null"),
        )
    }

    /// Our awareness update if we have a state to announce (a freshly opened channel).
    pub(crate) fn present_awareness(&self) -> Option<Vec<u8>> {
        let has_state = self.local_awareness.lock().json.is_some();
        has_state.then(|| self.awareness_update())
    }

    /// Clears our state; returns the removal to send if there was one (closing a channel).
    pub(crate) fn clear_awareness(&self) -> Option<Vec<u8>> {
        {
            let mut local = self.local_awareness.lock();
            local.json.as_ref()?;
            local.clock += 1;
            local.json = None;
        }
        Some(self.awareness_update())
    }

    /// Starts forwarding local edits to the driver.
    pub(crate) fn observe_local_edits(
        self: &Arc<Self>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Result<(), ClientError> {
        let id = self.id.clone();
        let remote: Origin = REMOTE_ORIGIN.into();
        let shared = Arc::downgrade(self);
        self.doc
            .observe_update_v1("quire-client", move |txn, event| {
                if txn.origin() != Some(&remote) {
                    if let Some(shared) = shared.upgrade() {
                        shared.local_edits.fetch_add(1, Ordering::AcqRel);
                    }
                    let _ = commands.send(Command::LocalUpdate {
                        doc: id.clone(),
                        update: event.update.clone(),
                    });
                }
            })
            .map_err(|e| ClientError::Config(format!("observing the document: {e}")))
    }
}

/// y-protocols awareness encoding of one entry.
pub(crate) fn encode_awareness(client: u64, clock: u32, json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, 1);
    write_varint(&mut out, client);
    write_varint(&mut out, clock.into());
    write_string(&mut out, json);
    out
}

/// An open document. Edit it through [`DocHandle::doc`] with ordinary yrs transactions; the
/// client notices each commit. Dropping the handle keeps the document open; call
/// [`DocHandle::close`] to close its channel.
#[derive(Debug, Clone)]
pub struct DocHandle {
    pub(crate) shared: Arc<DocShared>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl DocHandle {
    pub fn id(&self) -> &DocId {
        &self.shared.id
    }

    /// The local replica.
    pub fn doc(&self) -> &Doc {
        &self.shared.doc
    }

    /// The text of the shared `content` Y.Text.
    pub fn text(&self) -> String {
        let text = self.shared.doc.get_or_insert_text(CONTENT);
        let txn = self.shared.doc.transact();
        text.get_string(&txn)
    }

    /// Sync state changes.
    pub fn state(&self) -> watch::Receiver<DocState> {
        self.shared.state.subscribe()
    }

    /// The access the server granted on the current connection (None until opened).
    pub fn granted(&self) -> watch::Receiver<Option<Access>> {
        self.shared.granted.subscribe()
    }

    /// Sets this client's awareness state (JSON), or clears it with `None`.
    pub fn set_awareness(&self, json: Option<&str>) {
        {
            let mut local = self.shared.local_awareness.lock();
            local.clock += 1;
            local.json = json.map(str::to_owned);
        }
        let _ = self.commands.send(Command::Awareness {
            doc: self.shared.id.clone(),
        });
    }

    /// The other clients' awareness states, by awareness client ID.
    pub fn others(&self) -> watch::Receiver<BTreeMap<u64, String>> {
        self.shared.others.subscribe()
    }

    /// Closes the document's channel (1000); local data stays in the store.
    pub async fn close(self) {
        let (done, wait) = oneshot::channel();
        if self
            .commands
            .send(Command::Close {
                doc: self.shared.id.clone(),
                done,
            })
            .is_ok()
        {
            let _ = wait.await;
        }
    }
}
