//! Fan-out between servers that share a database, through Redis pub/sub (`--redis-url`).
//! After a commit, a server publishes each stored update as `(document, number, bytes)`; every
//! server receives what the others published and hands it to the document's room, which
//! applies it if it directly follows what the room holds, and otherwise reads the gap from the
//! database. Redis is a fast path only: pub/sub does not promise delivery, so nothing depends
//! on it. While Redis is unreachable, publishing drops messages, the servers check the
//! database at the fast rate instead ([`crate::rooms::Rooms::follow_shared_store`]), and both
//! connections are retried with backoff.
//!
//! Each document has a channel of its own ([`update_channel`]), and a server subscribes to the
//! channels of the documents it has loaded, and only those: a server receives what concerns
//! its own clients, not every update of the cluster. Once a document's subscription is made,
//! its room reads from the database whatever was published while it loaded.
//!
//! Awareness (cursors, names) travels the same way on [`awareness_channel`] and is never
//! stored: a server relays other servers' states to its clients and drops those not renewed in
//! time (their server is gone).
//!
//! An update message is: the sending server's ID (8 bytes), the update's number (8), when it
//! was committed (8: microseconds since the Unix epoch, for the receive lag), the document
//! ID's length (4) and the ID, then the update; integers little-endian.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// The prefix of the documents' update channels.
const UPDATES_PREFIX: &str = "quire:u:";
/// The prefix of the documents' awareness channels.
const AWARENESS_PREFIX: &str = "quire:a:";
/// Channels named in one SUBSCRIBE after a reconnect.
const SUBSCRIBE_CHUNK: usize = 512;

/// The Redis channel of `doc`'s stored updates.
pub fn update_channel(doc: &str) -> String {
    format!("{UPDATES_PREFIX}{doc}")
}

/// The Redis channel of `doc`'s awareness updates: the sending server's ID (8 bytes), the
/// document ID's length (4) and the ID, then the awareness update as clients send it.
pub fn awareness_channel(doc: &str) -> String {
    format!("{AWARENESS_PREFIX}{doc}")
}
/// Updates waiting to be published; past this, new ones are dropped (the database check
/// delivers them).
const PUBLISH_QUEUE: usize = 16 * 1024;
/// Updates received and not yet handed to their rooms; past this, dropped likewise.
const RECEIVE_QUEUE: usize = 16 * 1024;
/// How long a Redis command may take before the connection counts as lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the subscribing connection is checked with a PING (a paused Redis sends nothing,
/// and that silence would look like an idle cluster).
const PING_EVERY: Duration = Duration::from_secs(1);
/// Reconnection delays: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// An update another server stored and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUpdate {
    pub doc: String,
    pub seq: i64,
    pub update: Vec<u8>,
}

/// What another server published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Update(RemoteUpdate),
    /// An awareness update one of its clients sent (or its removal of a client that left).
    Awareness {
        doc: String,
        payload: Vec<u8>,
    },
    /// This server now receives `doc`'s updates: what was published while its room loaded is
    /// read from the database.
    Subscribed(String),
}

/// The publishing side, cloned into the persister; also where the registry of rooms says
/// which documents this server follows.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Messages with when their update was committed (or the awareness update received).
    queue: mpsc::Sender<(Outgoing, Instant)>,
    /// Documents loaded and unloaded, for the subscription.
    interest: mpsc::UnboundedSender<Interest>,
    server: u64,
    metrics: Arc<Metrics>,
}

/// A change in the documents this server has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interest {
    Follow(String),
    Unfollow(String),
}

impl Publisher {
    /// Queues a stored update for publishing, without waiting.
    pub fn publish(&self, doc: &str, seq: i64, update: &[u8]) {
        let message = encode(self.server, doc, seq, unix_micros(), update);
        self.enqueue(Outgoing {
            channel: update_channel(doc),
            message,
            update: true,
        });
    }

    /// Subscribes to `doc`'s channels (it was loaded here).
    pub fn follow(&self, doc: &str) {
        let _ = self.interest.send(Interest::Follow(doc.to_owned()));
    }

    /// Unsubscribes from `doc`'s channels (it was unloaded here).
    pub fn unfollow(&self, doc: &str) {
        let _ = self.interest.send(Interest::Unfollow(doc.to_owned()));
    }

    /// Queues an awareness update of `doc` for the other servers, without waiting.
    pub fn publish_awareness(&self, doc: &str, payload: &[u8]) {
        let mut message = Vec::with_capacity(12 + doc.len() + payload.len());
        message.extend_from_slice(&self.server.to_le_bytes());
        message.extend_from_slice(&(doc.len() as u32).to_le_bytes());
        message.extend_from_slice(doc.as_bytes());
        message.extend_from_slice(payload);
        self.enqueue(Outgoing {
            channel: awareness_channel(doc),
            message,
            update: false,
        });
    }

    fn enqueue(&self, message: Outgoing) {
        if self.queue.try_send((message, Instant::now())).is_err() {
            self.metrics.redis_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct Outgoing {
    channel: String,
    message: Vec<u8>,
    /// A stored update (its publish lag is measured), not an awareness update.
    update: bool,
}

/// Starts publishing and subscribing through the Redis server at `url`, counting in
/// `metrics`; returns the publisher and the stream of other servers' updates. The tasks run
/// until both are dropped.
pub fn start(
    url: &str,
    metrics: Arc<Metrics>,
) -> Result<(Publisher, mpsc::Receiver<Remote>), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let server: u64 = rand::random();
    metrics.redis_configured.store(true, Ordering::Release);
    let (queue, outgoing) = mpsc::channel(PUBLISH_QUEUE);
    let (incoming, received) = mpsc::channel(RECEIVE_QUEUE);
    let (interest, changes) = mpsc::unbounded_channel();
    tokio::spawn(publish_loop(client.clone(), outgoing, metrics.clone()));
    let following = Following {
        changes,
        docs: HashSet::new(),
    };
    tokio::spawn(subscribe_loop(
        client,
        server,
        incoming,
        following,
        metrics.clone(),
    ));
    let publisher = Publisher {
        queue,
        interest,
        server,
        metrics,
    };
    Ok((publisher, received))
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Publishes what is queued, as one pipeline per batch; reconnects after a failure. What
/// fails to go out is dropped: the other servers' database checks deliver it.
async fn publish_loop(
    client: redis::Client,
    mut outgoing: mpsc::Receiver<(Outgoing, Instant)>,
    stats: Arc<Metrics>,
) {
    let mut retry = RETRY_FIRST;
    let mut batch = Vec::new();
    'connect: loop {
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await
        {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(error = %err, "redis: publishing connection failed");
                drop_waiting(&mut outgoing, &stats);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        stats.redis_publishing.store(true, Ordering::Release);
        retry = RETRY_FIRST;
        loop {
            if outgoing.recv_many(&mut batch, 256).await == 0 {
                return; // the server is stopping
            }
            let mut pipe = redis::pipe();
            for (outgoing, _) in &batch {
                pipe.publish(&outgoing.channel, outgoing.message.as_slice())
                    .ignore();
            }
            let sent = batch.len() as u64;
            let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            match result {
                Ok(()) => {
                    stats.redis_published.fetch_add(sent, Ordering::Relaxed);
                    for (outgoing, committed) in &batch {
                        if outgoing.update {
                            stats.redis_publish_lag.observe(committed.elapsed());
                        }
                    }
                    batch.clear();
                }
                Err(err) => {
                    batch.clear();
                    stats.redis_publishing.store(false, Ordering::Release);
                    stats.redis_dropped.fetch_add(sent, Ordering::Relaxed);
                    tracing::warn!(error = %err, "redis: publishing failed; servers fall back to checking the database");
                    continue 'connect;
                }
            }
        }
    }
}

/// Drops what waits to be published while Redis is unreachable (it would be stale by the
/// time Redis is back, and the database checks deliver it).
fn drop_waiting(outgoing: &mut mpsc::Receiver<(Outgoing, Instant)>, stats: &Metrics) {
    while outgoing.try_recv().is_ok() {
        stats.redis_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The documents this server follows, and the registry's changes to them not yet applied.
#[derive(Debug)]
struct Following {
    changes: mpsc::UnboundedReceiver<Interest>,
    docs: HashSet<String>,
}

impl Following {
    /// Applies the changes waiting, without subscribing (before a (re)subscription).
    fn catch_up(&mut self) {
        while let Ok(change) = self.changes.try_recv() {
            self.apply(&change);
        }
    }

    fn apply(&mut self, change: &Interest) {
        match change {
            Interest::Follow(doc) => self.docs.insert(doc.clone()),
            Interest::Unfollow(doc) => self.docs.remove(doc),
        };
    }
}

/// Both channels of `doc`.
fn channels_of(doc: &str) -> [String; 2] {
    [update_channel(doc), awareness_channel(doc)]
}

/// Receives the other servers' updates of the documents loaded here; resubscribes after a
/// failure or a missed PING.
async fn subscribe_loop(
    client: redis::Client,
    server: u64,
    incoming: mpsc::Sender<Remote>,
    mut following: Following,
    stats: Arc<Metrics>,
) {
    let mut retry = RETRY_FIRST;
    loop {
        let ended = subscribe_once(&client, server, &incoming, &mut following, &stats).await;
        stats.redis_subscribed.store(false, Ordering::Release);
        match ended {
            Ok(Ended::Stopping) => return,
            Ok(Ended::Lost) => {
                tracing::warn!(
                    "redis: subscription lost; servers fall back to checking the database"
                );
                retry = RETRY_FIRST;
            }
            Err(err) => tracing::debug!(error = %err, "redis: subscribing failed"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

enum Ended {
    Lost,
    Stopping,
}

/// Runs `command` with the response deadline; a late answer is an error.
async fn in_time<T>(
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(RESPONSE_TIMEOUT, command)
        .await
        .map_err(|_| timed_out())?
}

async fn subscribe_once(
    client: &redis::Client,
    server: u64,
    incoming: &mpsc::Sender<Remote>,
    following: &mut Following,
    stats: &Metrics,
) -> redis::RedisResult<Ended> {
    let pubsub = in_time(client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    following.catch_up();
    let all: Vec<String> = following.docs.iter().flat_map(|d| channels_of(d)).collect();
    for chunk in all.chunks(SUBSCRIBE_CHUNK) {
        in_time(sink.subscribe(chunk)).await?;
    }
    // What was published while the subscription was away is left to the database check,
    // which ran at the full rate meanwhile: one query for every loaded document.
    stats.redis_subscribed.store(true, Ordering::Release);
    tracing::info!(
        documents = following.docs.len(),
        "redis: subscribed to other servers' updates of the documents loaded here"
    );
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return Ok(Ended::Lost) };
                let remote = if message.get_channel_name().starts_with(AWARENESS_PREFIX) {
                    let Some(remote) = decode_awareness(message.get_payload_bytes(), server) else {
                        continue;
                    };
                    remote
                } else {
                    let Some((update, committed_us)) = decode(message.get_payload_bytes(), server) else {
                        continue; // its own, or not a Quire message
                    };
                    stats.redis_received.fetch_add(1, Ordering::Relaxed);
                    let lag_us = unix_micros().saturating_sub(committed_us);
                    stats.redis_receive_lag.observe(Duration::from_micros(lag_us));
                    Remote::Update(update)
                };
                match incoming.try_send(remote) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        stats.redis_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(Ended::Stopping),
                }
            }
            change = following.changes.recv() => {
                let Some(change) = change else { return Ok(Ended::Stopping) };
                following.apply(&change);
                let result = match &change {
                    Interest::Follow(doc) => in_time(sink.subscribe(&channels_of(doc))).await,
                    Interest::Unfollow(doc) => in_time(sink.unsubscribe(&channels_of(doc))).await,
                };
                if result.is_err() {
                    return Ok(Ended::Lost);
                }
                if let Interest::Follow(doc) = change {
                    if incoming.send(Remote::Subscribed(doc)).await.is_err() {
                        return Ok(Ended::Stopping);
                    }
                }
            }
            _ = pings.tick() => {
                let pong: redis::RedisResult<redis::Value> = in_time(sink.ping()).await;
                if pong.is_err() {
                    return Ok(Ended::Lost);
                }
            }
        }
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Bytes before the document ID: server, number, commit time, ID length.
const HEADER: usize = 28;

fn encode(server: u64, doc: &str, seq: i64, committed_us: u64, update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + doc.len() + update.len());
    out.extend_from_slice(&server.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&committed_us.to_le_bytes());
    out.extend_from_slice(&(doc.len() as u32).to_le_bytes());
    out.extend_from_slice(doc.as_bytes());
    out.extend_from_slice(update);
    out
}

/// An awareness message from another server; `None` for this server's own and for malformed
/// ones.
fn decode_awareness(bytes: &[u8], this_server: u64) -> Option<Remote> {
    let server = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    if server == this_server {
        return None;
    }
    let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let doc = std::str::from_utf8(bytes.get(12..12usize.checked_add(len)?)?).ok()?;
    Some(Remote::Awareness {
        doc: doc.to_owned(),
        payload: bytes[12 + len..].to_vec(),
    })
}

/// A message from another server, with when its update was committed; `None` for this
/// server's own and for malformed ones.
fn decode(bytes: &[u8], this_server: u64) -> Option<(RemoteUpdate, u64)> {
    let server = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    if server == this_server {
        return None;
    }
    let seq = i64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let committed_us = u64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?);
    let len = u32::from_le_bytes(bytes.get(24..HEADER)?.try_into().ok()?) as usize;
    let doc = std::str::from_utf8(bytes.get(HEADER..HEADER.checked_add(len)?)?).ok()?;
    let update = RemoteUpdate {
        doc: doc.to_owned(),
        seq,
        update: bytes[HEADER + len..].to_vec(),
    };
    Some((update, committed_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_skip_their_sender() {
        let message = encode(7, "notes/a", 42, 1_000_000, b"\x01\x02");
        assert_eq!(
            decode(&message, 8),
            Some((
                RemoteUpdate {
                    doc: "notes/a".into(),
                    seq: 42,
                    update: vec![1, 2],
                },
                1_000_000
            ))
        );
        assert_eq!(decode(&message, 7), None, "a server's own message");
        for cut in 0..HEADER + 7 {
            assert_eq!(decode(&message[..cut], 8), None, "cut at {cut}");
        }
        let mut long = message.clone();
        long[24..HEADER].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&long, 8), None, "a length past the end");
    }

    #[test]
    fn each_document_has_its_channels_and_the_followed_set_tracks_loads() {
        assert_eq!(channels_of("team/a"), ["quire:u:team/a", "quire:a:team/a"]);
        let (tx, changes) = mpsc::unbounded_channel();
        let mut following = Following {
            changes,
            docs: HashSet::new(),
        };
        for change in [
            Interest::Follow("a".into()),
            Interest::Follow("b".into()),
            Interest::Unfollow("a".into()),
            Interest::Follow("a".into()),
            Interest::Unfollow("b".into()),
        ] {
            tx.send(change).unwrap();
        }
        following.catch_up();
        assert_eq!(following.docs, HashSet::from(["a".to_owned()]));
    }
}
