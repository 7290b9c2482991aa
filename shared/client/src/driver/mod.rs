//! The driver: one task that owns the connection for all documents. It is a thin driver
//! around the protocol crate's sans-IO [`ClientSession`], which decides when to connect and
//! when to give up, the heartbeat, the channels and their re-opens: this file feeds it the
//! socket's messages, the API's commands and the clock, and writes what it transmits.
//! `events` does what its events ask of the documents, `store` keeps them in the local store,
//! `link` is the current socket.

mod events;
mod link;
mod store;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use quire_protocol::request::{ReplyBody, RequestOp};
use quire_protocol::session::{
    ClientConfig as SessionConfig, ClientSession, Credential, NotSent, Transmit,
};
use quire_protocol::ysync::encode_update;
use quire_protocol::{Access, CloseCode, DocId, Reaction, StateDigest};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use self::link::Link;
use crate::config::{ClientConfig, Trust};
use crate::document::{DocHandle, DocShared};
use crate::error::ClientError;
use crate::state::{ConnectionState, DocState};
use crate::store::LocalStore;
use crate::transport::{self, ConnectError, LastRead, Socket};

/// Requests from the API to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Open {
        doc: DocId,
        access: Access,
        reply: oneshot::Sender<Result<DocHandle, ClientError>>,
    },
    Close {
        doc: DocId,
        done: oneshot::Sender<()>,
    },
    LocalUpdate {
        doc: DocId,
        update: Vec<u8>,
    },
    Awareness {
        doc: DocId,
    },
    /// A request (PROTOCOL §5.4, §6.9): on `doc`'s channel, or on channel 0 when `None`.
    Request {
        doc: Option<DocId>,
        op: RequestOp,
        reply: oneshot::Sender<Result<ReplyBody, ClientError>>,
    },
    /// A `DIGEST` request on `doc`'s channel (§6.10); the replica's own digest is taken when
    /// the reply arrives, after every update the server sent before it.
    Digest {
        doc: DocId,
        reply: oneshot::Sender<Result<DigestPair, ClientError>>,
    },
    SetToken(Option<String>),
    SetTrust(Trust),
    Shutdown {
        code: CloseCode,
        done: oneshot::Sender<()>,
    },
}

/// The server's digest of a document and the replica's, taken as the reply arrived, with the
/// count of local edits then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DigestPair {
    pub server: StateDigest,
    pub local: StateDigest,
    pub local_edits: u64,
}

/// Who waits for a request's reply.
#[derive(Debug)]
pub(crate) enum Waiter {
    Reply(oneshot::Sender<Result<ReplyBody, ClientError>>),
    Digest {
        doc: DocId,
        reply: oneshot::Sender<Result<DigestPair, ClientError>>,
    },
}

/// A document the client holds, across connections.
#[derive(Debug)]
pub(crate) struct DocEntry {
    pub shared: Arc<DocShared>,
    /// Local-store IDs of edits not yet acknowledged as durable, ascending.
    pub pending: VecDeque<i64>,
    /// Appends since the last local compaction.
    pub appended: usize,
}

type Connecting = Pin<Box<dyn Future<Output = Result<(Socket, LastRead), ConnectError>> + Send>>;

pub(crate) struct Driver<S> {
    pub config: ClientConfig,
    pub store: Arc<S>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub command_tx: mpsc::UnboundedSender<Command>,
    pub state: watch::Sender<ConnectionState>,
    pub docs: HashMap<DocId, DocEntry>,
    core: ClientSession,
    link: Option<Link>,
    connecting: Option<Connecting>,
    /// Who waits for which request's reply.
    requests: HashMap<u32, Waiter>,
    /// Set by a Shutdown command (or the API's end): stop once the Close is out.
    stop: Option<Option<oneshot::Sender<()>>>,
}

impl<S: LocalStore> Driver<S> {
    pub(crate) fn new(
        config: ClientConfig,
        store: Arc<S>,
        commands: mpsc::UnboundedReceiver<Command>,
        command_tx: mpsc::UnboundedSender<Command>,
        state: watch::Sender<ConnectionState>,
    ) -> Self {
        let session = SessionConfig {
            client_name: config.client_name.clone(),
            backoff: config.backoff,
            seed: rand::random(),
        };
        let online = !config.url.is_empty();
        Self {
            core: ClientSession::new(Instant::now(), session, online),
            config,
            store,
            commands,
            command_tx,
            state,
            docs: HashMap::new(),
            link: None,
            connecting: None,
            requests: HashMap::new(),
            stop: None,
        }
    }

    pub(crate) async fn run(mut self) {
        if self.config.url.is_empty() {
            self.publish(ConnectionState::LocalOnly);
        }
        loop {
            self.carry_out().await;
            if let Some(done) = self.stop.take() {
                if let Some(link) = self.link.take() {
                    link::linger(link.close(CloseCode::Normal).await).await;
                }
                self.publish(ConnectionState::Closed);
                self.set_docs_offline();
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            let wake = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                connected = async { self.connecting.as_mut().expect("guarded").await }, if self.connecting.is_some() => {
                    self.connecting = None;
                    self.on_connected(connected);
                }
                message = async { self.link.as_mut().expect("guarded").stream.next().await }, if self.link.is_some() => {
                    self.on_socket(message);
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.core.shutdown(CloseCode::Normal);
                        self.stop = Some(None);
                    }
                },
                _ = sleep_until_opt(wake) => {
                    if let Some(link) = &self.link {
                        self.core.note_read_activity(link.last_read.get());
                    }
                    self.core.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Writes what the core transmits and does what its events ask, until neither is left.
    async fn carry_out(&mut self) {
        loop {
            let sent = self.transmit().await;
            let Some(event) = self.core.poll_event() else {
                if !sent {
                    return;
                }
                continue;
            };
            self.on_event(event).await;
        }
    }

    /// Writes the core's transmits; returns whether there were any.
    async fn transmit(&mut self) -> bool {
        let mut any = false;
        while let Some(transmit) = self.core.poll_transmit() {
            any = true;
            match transmit {
                Transmit::Frame(frame) => {
                    if let Some(link) = &self.link {
                        link.send(frame).await;
                    }
                }
                Transmit::Close(code) => {
                    if let Some(link) = self.link.take() {
                        let writer = link.close(code).await;
                        if self.stop.is_some() {
                            link::linger(writer).await;
                        }
                    }
                }
                Transmit::Drop => {
                    if let Some(link) = self.link.take() {
                        link.abandon();
                    }
                }
            }
        }
        any
    }

    fn on_connected(&mut self, connected: Result<(Socket, LastRead), ConnectError>) {
        let now = Instant::now();
        match connected {
            Ok((socket, last_read)) => {
                self.link = Some(Link::new(socket, last_read));
                self.core.connected(now);
            }
            Err(ConnectError::Untrusted {
                fingerprint,
                reason,
            }) => {
                self.publish(ConnectionState::Untrusted {
                    fingerprint,
                    reason,
                });
                self.core.untrusted();
            }
            Err(err) => {
                let (reaction, reason) = connect_reaction(&err);
                self.core.connect_failed(now, reaction, reason);
            }
        }
    }

    fn on_socket(&mut self, message: Option<Result<WsMessage, impl std::fmt::Display>>) {
        let now = Instant::now();
        match message {
            Some(Ok(WsMessage::Binary(bytes))) => self.core.handle_frame(now, &bytes),
            Some(Ok(WsMessage::Text(_))) => self.core.handle_text(now),
            Some(Ok(WsMessage::Close(frame))) => {
                self.link = None;
                let (code, reason) = frame.map_or((CloseCode::Other(1005), String::new()), |f| {
                    (CloseCode::from_u16(f.code.into()), f.reason.to_string())
                });
                self.core.socket_closed(now, code, reason);
            }
            Some(Ok(_)) => self.core.note_read_activity(now),
            Some(Err(err)) => {
                self.link = None;
                let reason = format!("connection lost: {err}");
                self.core.socket_closed(now, CloseCode::Abnormal, reason);
            }
            None => {
                self.link = None;
                self.core
                    .socket_closed(now, CloseCode::Abnormal, "connection lost");
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Open { doc, access, reply } => {
                let result = self.load(doc.clone()).await;
                if result.is_ok() {
                    self.core.open_doc(doc, access);
                }
                let _ = reply.send(result);
            }
            Command::Close { doc, done } => {
                let removal = self
                    .docs
                    .remove(&doc)
                    .and_then(|entry| entry.shared.clear_awareness());
                self.core.close_doc(&doc, removal);
                let _ = done.send(());
            }
            Command::LocalUpdate { doc, update } => {
                let id = self.store_local(&doc, &update).await.unwrap_or(0);
                self.core.local_update(&doc, encode_update(update), id);
                self.publish_doc(&doc);
            }
            Command::Awareness { doc } => {
                if let Some(entry) = self.docs.get(&doc) {
                    let update = entry.shared.awareness_update();
                    self.core.send_awareness(&doc, update);
                }
            }
            Command::Request { doc, op, reply } => match self.core.request(doc.as_ref(), op) {
                Ok(id) => {
                    self.requests.insert(id, Waiter::Reply(reply));
                }
                Err(NotSent::Offline) => drop(reply.send(Err(ClientError::Offline))),
                Err(NotSent::NotOpen) => drop(reply.send(Err(ClientError::NotOpen))),
            },
            Command::Digest { doc, reply } => {
                // Before the server's step 1 is answered local edits wait here: the server
                // could not hold them, and the digests would differ for that alone.
                if self.core.holds_back_edits(&doc) {
                    drop(reply.send(Err(ClientError::NotOpen)));
                    return;
                }
                match self.core.request(Some(&doc), RequestOp::Digest) {
                    Ok(id) => {
                        self.requests.insert(id, Waiter::Digest { doc, reply });
                    }
                    Err(NotSent::Offline) => drop(reply.send(Err(ClientError::Offline))),
                    Err(NotSent::NotOpen) => drop(reply.send(Err(ClientError::NotOpen))),
                }
            }
            Command::SetToken(token) => {
                self.config.token = token;
                self.core.credential_changed(Credential::Token);
            }
            Command::SetTrust(trust) => {
                self.config.trust = trust;
                self.core.credential_changed(Credential::Trust);
            }
            Command::Shutdown { code, done } => {
                self.core.shutdown(code);
                self.stop = Some(Some(done));
            }
        }
    }

    /// Starts opening a socket with the current token and trust.
    fn connect(&mut self) {
        let config = self.config.clone();
        self.connecting = Some(Box::pin(async move {
            transport::connect(&config, config.token.as_deref()).await
        }));
    }

    pub(crate) fn publish(&self, state: ConnectionState) {
        tracing::debug!(?state, "connection state");
        self.state.send_replace(state);
    }

    /// Publishes a document's state after a local edit or an ACK.
    fn publish_doc(&self, doc: &DocId) {
        let Some(entry) = self.docs.get(doc) else {
            return;
        };
        let pending = entry.pending.len();
        if self.core.is_synced(doc) {
            entry
                .shared
                .state
                .send_replace(DocState::Synced { pending });
        } else if !self.core.is_welcomed() && !self.core.is_failed(doc) {
            entry
                .shared
                .state
                .send_replace(DocState::Offline { pending });
        }
    }

    fn set_docs_offline(&self) {
        for (doc, entry) in &self.docs {
            if !self.core.is_failed(doc) {
                entry.shared.state.send_replace(DocState::Offline {
                    pending: entry.pending.len(),
                });
            }
            entry.shared.granted.send_replace(None);
        }
    }
}

/// The reaction to a failed connection attempt.
fn connect_reaction(err: &ConnectError) -> (Reaction, String) {
    match err {
        ConnectError::Status(401) => (
            Reaction::WaitForNewCredentials,
            "the server rejected the token (401)".into(),
        ),
        ConnectError::Status(403) => (
            Reaction::WaitForNewCredentials,
            "the token grants no access (403)".into(),
        ),
        ConnectError::Status(status @ (429 | 503)) => (
            Reaction::RetryWithBackoff,
            format!("server busy ({status})"),
        ),
        ConnectError::Status(status) if *status >= 500 => (
            Reaction::RetryWithBackoff,
            format!("server error ({status})"),
        ),
        ConnectError::Status(status) => (
            Reaction::Stop,
            format!("the server refused the connection ({status})"),
        ),
        ConnectError::BadUrl(reason) => (Reaction::Stop, reason.clone()),
        ConnectError::Untrusted { reason, .. } => (Reaction::Stop, reason.clone()),
        ConnectError::Network(reason) => (Reaction::RetryWithBackoff, reason.clone()),
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
