//! The public face: start a client, open documents, watch the connection, close.

use std::sync::Arc;

use quire_protocol::{Access, CloseCode, DocId, Limits};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{ClientConfig, Trust};
use crate::document::DocHandle;
use crate::driver::{Command, Driver};
use crate::error::ClientError;
use crate::state::ConnectionState;
use crate::store::LocalStore;

/// One connection to one server, shared by every open document. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
}

impl Client {
    /// Starts the client's driver task; it connects at once and keeps reconnecting as the
    /// protocol's close-code table says.
    pub fn start<S: LocalStore>(config: ClientConfig, store: Arc<S>) -> Self {
        let (command_tx, commands) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnectionState::Connecting { attempt: 0 });
        let driver = Driver::new(config, store, commands, command_tx.clone(), state_tx);
        tokio::spawn(driver.run());
        Self {
            commands: command_tx,
            state,
        }
    }

    /// Opens a document: loads its local copy (pending edits included) and opens a channel
    /// for it whenever connected. Opening an open document returns the same handle.
    pub async fn open(&self, doc: &str, access: Access) -> Result<DocHandle, ClientError> {
        let doc = DocId::parse(doc, Limits::DEFAULT_MAX_DOC_ID_LEN)
            .map_err(|_| ClientError::InvalidDocId)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Open { doc, access, reply })
            .map_err(|_| ClientError::ShutDown)?;
        answer.await.map_err(|_| ClientError::ShutDown)?
    }

    /// The connection state, always the latest.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Supplies a new token (after [`ConnectionState::AuthFailed`]); reconnects at once.
    pub fn set_token(&self, token: Option<String>) {
        let _ = self.commands.send(Command::SetToken(token));
    }

    /// Changes which certificates are trusted (after [`ConnectionState::Untrusted`]).
    pub fn set_trust(&self, trust: Trust) {
        let _ = self.commands.send(Command::SetTrust(trust));
    }

    /// The caller is done: closes with 1000 and stops.
    pub async fn close(&self) {
        self.stop(CloseCode::Normal).await;
    }

    /// The application is quitting: local data is already stored, closes with 1001 and stops.
    pub async fn shutdown(&self) {
        self.stop(CloseCode::GoingAway).await;
    }

    async fn stop(&self, code: CloseCode) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown { code, done }).is_ok() {
            let _ = wait.await;
        }
    }
}
