//! A writer that streams uniquely marked inserts into one channel without waiting for each ACK,
//! reading ACKs as they come, until its connection ends. The report says which inserts the
//! server acknowledged as durable, so a test can check each of them after a crash or restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quire_protocol::ChannelId;
use tokio::task::JoinHandle;

use crate::doc_peer::Peer;
use crate::server_process::ServerProcess;

/// What to send.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub channel: ChannelId,
    /// Makes this writer's markers unique: `<prefix:n>`.
    pub prefix: String,
    /// Stop sending after this many inserts (then read until the connection ends).
    pub limit: Option<usize>,
    /// Most writes sent and not yet acknowledged.
    pub window: u64,
}

/// What happened.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// Every insert sent, in order: (write number, marker).
    pub sent: Vec<(u64, String)>,
    /// The highest ACK received.
    pub acked: u64,
    /// The connection's close code.
    pub close: Option<u16>,
}

impl StreamReport {
    /// Markers of the inserts covered by an ACK.
    pub fn acked_markers(&self) -> impl Iterator<Item = &str> {
        self.sent
            .iter()
            .filter(|(seq, _)| *seq <= self.acked)
            .map(|(_, marker)| marker.as_str())
    }

    /// Markers of the inserts sent but never acknowledged.
    pub fn unacked_markers(&self) -> impl Iterator<Item = &str> {
        self.sent
            .iter()
            .filter(|(seq, _)| *seq > self.acked)
            .map(|(_, marker)| marker.as_str())
    }
}

/// Streams inserts on a synced channel of `peer` as `plan` says, publishing the highest ACK in
/// `progress`, until the connection ends (kill, shutdown, slow-consumer close).
pub async fn stream_inserts(
    peer: &mut Peer,
    plan: &StreamPlan,
    progress: &AtomicU64,
) -> StreamReport {
    let channel = plan.channel;
    let mut sent = Vec::new();
    loop {
        let doc = &peer.docs[&channel];
        let more = plan.limit.is_none_or(|limit| sent.len() < limit);
        let open = doc.closed.is_none();
        let alive = if more && open && doc.writes - doc.acked < plan.window {
            let marker = format!("<{}:{}>", plan.prefix, sent.len());
            let seq = peer.append(channel, &marker).await;
            sent.push((seq, marker));
            peer.pump_ready().await
        } else {
            peer.pump().await
        };
        progress.store(peer.docs[&channel].acked, Ordering::Relaxed);
        if !alive {
            break;
        }
    }
    StreamReport {
        sent,
        acked: peer.docs[&channel].acked,
        close: peer.closed,
    }
}

/// A writer on its own connection, streaming in a task of its own.
#[derive(Debug)]
pub struct Writer {
    pub doc: String,
    progress: Arc<AtomicU64>,
    task: JoinHandle<StreamReport>,
}

impl Writer {
    /// Connects, opens `doc` on `plan.channel`, waits until synced, and starts streaming.
    pub async fn start(server: &ServerProcess, token: &str, doc: String, plan: StreamPlan) -> Self {
        let mut peer = Peer::connect(server, Some(token)).await;
        peer.open_synced(plan.channel, &doc).await;
        let progress = Arc::new(AtomicU64::new(0));
        let task = {
            let progress = progress.clone();
            tokio::spawn(async move { stream_inserts(&mut peer, &plan, &progress).await })
        };
        Self {
            doc,
            progress,
            task,
        }
    }

    /// The highest ACK so far.
    pub fn acked(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits for the stream to end (its connection closed); returns the document and report.
    pub async fn finish(self) -> (String, StreamReport) {
        (self.doc, self.task.await.expect("writer task"))
    }
}
