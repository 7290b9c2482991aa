//! The driver: one task that owns the connection for all documents. This file is the
//! reconnect loop — connect, run a session, decide from the ending whether and when to try
//! again (the protocol crate's close-code table and backoff schedule) — and the handling of
//! commands that need no connection. `session` runs one connection's life.

mod session;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_protocol::request::{ReplyBody, RequestOp};
use quire_protocol::{Access, ChannelCode, CloseCode, DocId, Reaction};
use tokio::sync::{mpsc, oneshot, watch};
use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::config::{ClientConfig, Trust};
use crate::document::{DocHandle, DocShared, REMOTE_ORIGIN};
use crate::error::ClientError;
use crate::state::{ConnectionState, DocState};
use crate::store::{LocalAppend, LocalStore};
use crate::transport::{self, ConnectError};

/// Compact a document's local log after this many appends, when nothing is pending.
const LOCAL_COMPACT_EVERY: usize = 500;

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
    SetToken(Option<String>),
    SetTrust(Trust),
    Shutdown {
        code: CloseCode,
        done: oneshot::Sender<()>,
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
    /// The server closed the channel with a code meaning "do not reopen".
    pub failed: bool,
    /// Reopen the channel no earlier than this (after a retryable channel close).
    pub reopen_at: Option<Instant>,
    pub reopen_attempt: u32,
    /// When the channel last opened; a channel that stayed open long enough resets
    /// `reopen_attempt` (the same rule as the connection's attempt counter).
    pub opened_at: Option<Instant>,
}

/// How a session ended.
#[derive(Debug)]
pub(crate) struct SessionEnd {
    pub code: CloseCode,
    pub reason: String,
    /// How long the connection was established (after WELCOME), if it was.
    pub uptime: Option<Duration>,
    /// The caller asked to close; do not reconnect.
    pub requested: bool,
}

pub(crate) struct Driver<S> {
    pub config: ClientConfig,
    pub store: Arc<S>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub command_tx: mpsc::UnboundedSender<Command>,
    pub state: watch::Sender<ConnectionState>,
    pub docs: HashMap<DocId, DocEntry>,
    /// Set by a Shutdown command received while offline.
    pub shutdown: Option<(CloseCode, oneshot::Sender<()>)>,
}

/// What to do next after the loop's current wait.
enum Next {
    Connect,
    Stop,
}

impl<S: LocalStore> Driver<S> {
    pub(crate) async fn run(mut self) {
        if self.config.url.is_empty() {
            return self.run_local_only().await;
        }
        let mut attempt: u32 = 0;
        loop {
            if self.shutdown.is_some() {
                break;
            }
            self.publish(ConnectionState::Connecting { attempt });
            self.set_docs_offline();
            let connected = {
                let token = self.config.token.clone();
                let config = self.config.clone();
                let connect = transport::connect(&config, token.as_deref());
                tokio::pin!(connect);
                loop {
                    tokio::select! {
                        result = &mut connect => break Some(result),
                        command = self.commands.recv() => {
                            let Some(command) = command else { break None };
                            self.handle_offline(command).await;
                            if self.shutdown.is_some() { break None; }
                        }
                    }
                }
            };
            let Some(connected) = connected else { break };
            let (reaction, code, reason, uptime) = match connected {
                Ok((socket, last_read)) => {
                    let end = self.session(socket, last_read).await;
                    self.set_docs_offline();
                    if end.requested {
                        break;
                    }
                    (end.code.reaction(), end.code, end.reason, end.uptime)
                }
                Err(err) => {
                    let (reaction, reason) = connect_reaction(&err);
                    if let ConnectError::Untrusted {
                        fingerprint,
                        reason,
                    } = err
                    {
                        self.publish(ConnectionState::Untrusted {
                            fingerprint,
                            reason,
                        });
                        match self
                            .wait_for(|cmd| matches!(cmd, Command::SetTrust(_)))
                            .await
                        {
                            Next::Connect => {
                                attempt = 0;
                                continue;
                            }
                            Next::Stop => break,
                        }
                    }
                    (reaction, CloseCode::Abnormal, reason, None)
                }
            };
            let code = code.as_u16();
            tracing::debug!(code, %reason, ?reaction, "connection ended");
            match reaction {
                Reaction::Stop | Reaction::DoNotReopen => {
                    self.publish(ConnectionState::Refused { reason });
                    match self
                        .wait_for(|cmd| matches!(cmd, Command::SetTrust(_) | Command::SetToken(_)))
                        .await
                    {
                        Next::Connect => attempt = 0,
                        Next::Stop => break,
                    }
                }
                Reaction::WaitForNewCredentials => {
                    self.publish(ConnectionState::AuthFailed { reason });
                    match self
                        .wait_for(|cmd| matches!(cmd, Command::SetToken(_)))
                        .await
                    {
                        Next::Connect => attempt = 0,
                        Next::Stop => break,
                    }
                }
                Reaction::RetrySoon | Reaction::RetryWithBackoff | Reaction::ReportBugThenRetry => {
                    if reaction == Reaction::ReportBugThenRetry {
                        tracing::warn!(code, %reason, "the server reported a protocol violation; this is a bug");
                    }
                    let delay = self
                        .config
                        .backoff
                        .delay_for(reaction, attempt, rand::random())
                        .unwrap_or(self.config.backoff.cap);
                    self.publish(ConnectionState::Reconnecting {
                        retry_in: delay,
                        attempt: attempt + 1,
                        last_code: code,
                        reason,
                    });
                    attempt = self.config.backoff.next_attempt(attempt, uptime);
                    if let Next::Stop = self.sleep_handling(delay).await {
                        break;
                    }
                }
            }
        }
        self.publish(ConnectionState::Closed);
        self.set_docs_offline();
        if let Some((_, done)) = self.shutdown.take() {
            let _ = done.send(());
        }
    }

    /// Without a server: serve documents from the local store until shut down.
    async fn run_local_only(mut self) {
        self.publish(ConnectionState::LocalOnly);
        while let Some(command) = self.commands.recv().await {
            self.handle_offline(command).await;
            if let Some((_, done)) = self.shutdown.take() {
                self.publish(ConnectionState::Closed);
                let _ = done.send(());
                return;
            }
        }
    }

    pub(crate) fn publish(&self, state: ConnectionState) {
        tracing::debug!(?state, "connection state");
        self.state.send_replace(state);
    }

    fn set_docs_offline(&self) {
        for entry in self.docs.values() {
            if !entry.failed {
                entry.shared.state.send_replace(DocState::Offline {
                    pending: entry.pending.len(),
                });
            }
            entry.shared.granted.send_replace(None);
        }
    }

    /// Waits for a command matching `wanted` (handling the others); a shutdown stops.
    async fn wait_for(&mut self, wanted: impl Fn(&Command) -> bool) -> Next {
        while let Some(command) = self.commands.recv().await {
            let matched = wanted(&command);
            self.handle_offline(command).await;
            if self.shutdown.is_some() {
                return Next::Stop;
            }
            if matched {
                return Next::Connect;
            }
        }
        Next::Stop
    }

    /// Sleeps `delay` while handling commands; a new token or trust cuts the wait short.
    async fn sleep_handling(&mut self, delay: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Next::Connect,
                command = self.commands.recv() => {
                    let Some(command) = command else { return Next::Stop };
                    let cut_short = matches!(command, Command::SetToken(_) | Command::SetTrust(_));
                    self.handle_offline(command).await;
                    if self.shutdown.is_some() {
                        return Next::Stop;
                    }
                    if cut_short {
                        return Next::Connect;
                    }
                }
            }
        }
    }

    /// Handles a command while no connection is up.
    async fn handle_offline(&mut self, command: Command) {
        match command {
            Command::Open { doc, access, reply } => {
                let _ = reply.send(self.load(doc, access).await);
            }
            Command::Close { doc, done } => {
                self.docs.remove(&doc);
                let _ = done.send(());
            }
            Command::LocalUpdate { doc, update } => {
                self.store_local(vec![(doc.clone(), update)]).await;
                if let Some(entry) = self.docs.get(&doc).filter(|e| !e.failed) {
                    entry.shared.state.send_replace(DocState::Offline {
                        pending: entry.pending.len(),
                    });
                }
            }
            Command::Awareness { .. } => {}
            Command::Request { reply, .. } => drop(reply.send(Err(ClientError::Offline))),
            Command::SetToken(token) => self.config.token = token,
            Command::SetTrust(trust) => self.config.trust = trust,
            Command::Shutdown { code, done } => self.shutdown = Some((code, done)),
        }
    }

    /// Opens a document locally: loads what the store holds into a fresh replica.
    async fn load(&mut self, doc: DocId, access: Access) -> Result<DocHandle, ClientError> {
        if let Some(entry) = self.docs.get(&doc) {
            return Ok(DocHandle {
                shared: entry.shared.clone(),
                commands: self.command_tx.clone(),
            });
        }
        let stored = self.store.load(doc.as_str()).await?;
        let ydoc = Doc::new();
        for bytes in &stored.updates {
            let update = quire_protocol::ysync::decode_update(bytes)
                .map_err(|e| ClientError::Corrupt(e.to_string()))?;
            ydoc.transact_mut_with(REMOTE_ORIGIN)
                .apply_update(update)
                .map_err(|e| ClientError::Corrupt(e.to_string()))?;
        }
        let pending: VecDeque<i64> = stored.pending.into_iter().collect();
        let shared = DocShared::new(
            doc.clone(),
            access,
            ydoc,
            DocState::Offline {
                pending: pending.len(),
            },
        );
        shared.observe_local_edits(self.command_tx.clone())?;
        self.docs.insert(
            doc,
            DocEntry {
                shared: shared.clone(),
                pending,
                appended: 0,
                failed: false,
                reopen_at: None,
                reopen_attempt: 0,
                opened_at: None,
            },
        );
        Ok(DocHandle {
            shared,
            commands: self.command_tx.clone(),
        })
    }

    /// Stores local edits as pending, in one transaction. Returns each edit's store ID.
    pub(crate) async fn store_local(&mut self, edits: Vec<(DocId, Vec<u8>)>) -> Vec<Option<i64>> {
        let batch: Vec<LocalAppend<'_>> = edits
            .iter()
            .filter(|(doc, _)| self.docs.contains_key(doc))
            .map(|(doc, data)| LocalAppend {
                doc: doc.as_str(),
                data,
                pending: true,
            })
            .collect();
        let ids = match self.store.append(&batch).await {
            Ok(ids) => ids,
            Err(err) => {
                // The edit is still in memory and will reach the server; only the crash
                // protection is lost for it.
                tracing::error!(error = %err, "local store append failed");
                vec![]
            }
        };
        let mut ids = ids.into_iter();
        let mut result = Vec::with_capacity(edits.len());
        for (doc, _) in &edits {
            let id = match self.docs.get_mut(doc) {
                Some(entry) => {
                    let id = ids.next();
                    if let Some(id) = id {
                        entry.pending.push_back(id);
                        entry.appended += 1;
                    }
                    id
                }
                None => None,
            };
            result.push(id);
        }
        result
    }

    /// Stores an update received from the server (not pending).
    pub(crate) async fn store_remote(&mut self, doc: &DocId, update: &[u8]) {
        if let Err(err) = self
            .store
            .append(&[LocalAppend {
                doc: doc.as_str(),
                data: update,
                pending: false,
            }])
            .await
        {
            tracing::error!(error = %err, "local store append failed");
        }
        if let Some(entry) = self.docs.get_mut(doc) {
            entry.appended += 1;
        }
        self.maybe_compact(doc).await;
    }

    /// Marks local edits up to `through` durable on the server.
    pub(crate) async fn acknowledge(&mut self, doc: &DocId, through: i64) {
        let Some(entry) = self.docs.get_mut(doc) else {
            return;
        };
        while entry.pending.front().is_some_and(|id| *id <= through) {
            entry.pending.pop_front();
        }
        if let Err(err) = self.store.acknowledge(doc.as_str(), through).await {
            tracing::error!(error = %err, "local store acknowledge failed");
        }
    }

    async fn maybe_compact(&mut self, doc: &DocId) {
        let Some(entry) = self.docs.get_mut(doc) else {
            return;
        };
        if entry.appended < LOCAL_COMPACT_EVERY || !entry.pending.is_empty() {
            return;
        }
        entry.appended = 0;
        let merged = entry
            .shared
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        if let Err(err) = self.store.compact(doc.as_str(), &merged).await {
            tracing::warn!(error = %err, "local compaction failed");
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

/// The reaction to a server closing a channel.
pub(crate) fn channel_reaction(code: u16) -> Reaction {
    ChannelCode::from_u16(code).reaction()
}
