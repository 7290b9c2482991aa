//! One client connection: a thin driver around the protocol crate's sans-IO session core
//! ([`ServerSession`]), which decides everything about the connection and its channels (HELLO,
//! heartbeat, token expiry, the channel table, reassembly, the error budget). This file feeds
//! it the socket's messages and the clock, and carries out what it asks: control frames to the
//! writer task ([`crate::outbox`]), work to each document's own task ([`crate::room_task`]),
//! never waited for here, so a busy document holds up neither the connection's other channels
//! nor its heartbeat. On shutdown it waits for this connection's writes to be durable and
//! acknowledged before closing with 1001.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Stream, StreamExt};
use quire_protocol::request::{Reply, Request};
use quire_protocol::session::{ServerConfig, ServerOutput, ServerSession};
use quire_protocol::{Access, ChannelCode, ChannelId, CloseCode, ConnId, DocId, Message};
use tokio::sync::{oneshot, Semaphore};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::Instrument;

use crate::auth::Claims;
use crate::memory::Use;
use crate::outbox::{self, ConnEvent, YIELD_BYTES};
pub use crate::outbox::{ConnHandle, QueueOnly};
use crate::room_task::{QueuedWork, RoomHandle, RoomJob, Subscription};
use crate::room_versions::{ReplyTo, VersionRequest};
use crate::server::{ConnectionSlot, Server};
use crate::store::Store;
use crate::subscription::SubKey;

/// How long to keep reading for the peer's Close frame once ours is out (or theirs came).
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages up to this size are "small" and draw on their own allowance of queued work,
/// [`SMALL_MESSAGES_BUDGET`] bytes per connection.
const SMALL_MESSAGE_BYTES: usize = 64 * 1024;
const SMALL_MESSAGES_BUDGET: usize = 1024 * 1024;
/// Frames already read from the socket that the reader handles in a row before it looks at
/// its timers, the room's events and shutdown again. Each look sets up a timer, an event
/// wait and a shutdown watch: per frame, a few percent of the server's time when a client
/// streams small writes (docs/BENCHMARKS.md, F0).
const READY_FRAMES_IN_A_ROW: usize = 16;
/// Bytes a queued job counts for beyond its payload, so that many tiny messages are bounded
/// too.
const JOB_OVERHEAD: usize = 1024;

/// Serves one upgraded WebSocket until it ends.
pub async fn serve<S, W>(
    server: Arc<Server<S>>,
    ws: W,
    peer: SocketAddr,
    claims: Claims,
    slot: ConnectionSlot<S>,
) where
    S: Store,
    W: Stream<Item = Result<WsMessage, tungstenite::Error>>
        + futures_util::Sink<WsMessage>
        + Unpin
        + Send
        + 'static,
{
    let conn_id = ConnId(server.next_conn_id.fetch_add(1, Ordering::Relaxed));
    let span = tracing::info_span!("conn", id = %conn_id, %peer, user = %claims.sub);
    async move {
        let config = &server.config;
        let handle = ConnHandle::new(
            conn_id,
            config.queue_depth,
            config.max_queued_bytes,
            config.limits.max_frame_size,
            server.metrics.clone(),
            server.memory.clone(),
        );
        let (sink, mut stream) = ws.split();
        let mut writer = tokio::spawn(outbox::run_writer(handle.clone(), sink).in_current_span());
        server.metrics.connections.fetch_add(1, Ordering::Relaxed);
        server
            .metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!("connected");

        let core = ServerSession::new(
            Instant::now(),
            ServerConfig {
                conn_id: conn_id.0,
                heartbeat: config.heartbeat,
                limits: config.limits,
                fragment_timeout: config.fragment_timeout,
                token_expires: token_deadline(claims.exp),
            },
        );
        let mut reader = Reader {
            server: server.clone(),
            conn: handle.clone(),
            claims,
            core,
            budget: Arc::new(Semaphore::new(config.limits.max_message_size as usize)),
            small_budget: Arc::new(Semaphore::new(SMALL_MESSAGES_BUDGET)),
            unyielded: 0,
            received: Instant::now(),
            requests: OnceLock::new(),
            author: OnceLock::new(),
        };
        let ending = reader.run(&mut stream).await;
        let mut peer_closed = matches!(ending, Ending::PeerClosed(_) | Ending::Lost);
        if let Ending::Shutdown = ending {
            // The channels stay open until their writes are acknowledged. Meanwhile the
            // client's frames are read and dropped: unread bytes at close would make the
            // kernel reset the connection, and the client would lose its ACKs and our Close.
            let flushed = reader.flush_channels();
            tokio::pin!(flushed);
            loop {
                tokio::select! {
                    _ = &mut flushed => break,
                    message = stream.next(), if !peer_closed => {
                        peer_closed = !matches!(message, Some(Ok(ref m)) if !m.is_close());
                    }
                }
            }
        }
        reader.close_all_channels();
        match ending {
            Ending::Shutdown => handle.close_after_queue(CloseCode::GoingAway),
            Ending::PeerClosed(code) => handle.close_after_queue(code),
            Ending::Killed => {}
            Ending::Lost => {
                handle.kill(CloseCode::Abnormal);
            }
        }
        // Keep reading until the writer is done and the peer has answered our Close (or gone),
        // so that TCP ends with a FIN after the Close frame, not a reset before it.
        let mut code = None;
        let linger = tokio::time::sleep(CLOSE_HANDSHAKE_TIMEOUT * 4);
        tokio::pin!(linger);
        while code.is_none() || !peer_closed {
            tokio::select! {
                done = &mut writer, if code.is_none() => {
                    code = Some(done.unwrap_or(CloseCode::Abnormal));
                    linger.as_mut().reset(tokio::time::Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
                }
                message = stream.next(), if !peer_closed => {
                    peer_closed = !matches!(message, Some(Ok(ref m)) if !m.is_close());
                }
                _ = &mut linger => break,
            }
        }
        let code = match code {
            Some(code) => code,
            None => {
                writer.abort();
                CloseCode::Abnormal
            }
        };
        server.metrics.count_close(code.as_u16());
        server.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(code = code.as_u16(), "disconnected");
        drop(slot);
    }
    .instrument(span)
    .await
}

/// Why the reader stopped.
#[derive(Debug)]
enum Ending {
    /// The server is shutting down: flush, then 1001.
    Shutdown,
    /// The client sent a Close frame with this code (echoed back).
    PeerClosed(CloseCode),
    /// The connection was killed with a code, or is closing after its queue: the writer
    /// sends the Close.
    Killed,
    /// The socket failed; nobody to send a Close to.
    Lost,
}

struct Reader<S> {
    server: Arc<Server<S>>,
    conn: ConnHandle,
    claims: Claims,
    /// The connection's state machine; this driver carries out what it decides.
    core: ServerSession<RoomHandle>,
    /// Bytes of this connection's large messages queued on rooms' tasks and not yet handled:
    /// past `max_message_size` the reader stops reading, which slows this client alone.
    budget: Arc<Semaphore>,
    /// The same for small messages, kept apart so that a small edit on one channel never
    /// waits for a large message on another to be applied.
    small_budget: Arc<Semaphore>,
    /// Bytes read since the reader last yielded to other tasks.
    unyielded: usize,
    /// When the frame being handled came in: the time of the writes it completes.
    received: Instant,
    /// Requests (§5.4, §6.9) in flight: past [`MAX_REQUESTS_IN_FLIGHT`], more are refused.
    /// Made at the first request (most connections never ask one: idle connections stay small).
    requests: OnceLock<Arc<Semaphore>>,
    /// The token holder's display name, an author of the versions its writes are in; made at
    /// the first subscription.
    author: OnceLock<Arc<str>>,
}

/// Requests one connection may have waiting for their replies.
const MAX_REQUESTS_IN_FLIGHT: usize = 8;

impl<S: Store> Reader<S> {
    async fn run<R>(&mut self, stream: &mut R) -> Ending
    where
        R: Stream<Item = Result<WsMessage, tungstenite::Error>> + Unpin,
    {
        let mut shutdown = self.server.shutdown.clone();
        loop {
            if let Some(ending) = self.carry_out().await {
                return ending;
            }
            let wake = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                message = stream.next() => {
                    if let Some(ending) = self.on_read(message).await {
                        return ending;
                    }
                    for _ in 1..READY_FRAMES_IN_A_ROW {
                        if let Some(ending) = self.carry_out().await {
                            return ending;
                        }
                        // A poll without a waker: when nothing is ready, the select above
                        // registers one again.
                        let Some(message) = stream.next().now_or_never() else { break };
                        if let Some(ending) = self.on_read(message).await {
                            return ending;
                        }
                    }
                }
                event = self.conn.next_event() => {
                    if let Err(ending) = self.on_event(event) {
                        return ending;
                    }
                }
                _ = sleep_until_opt(wake) => self.core.handle_timeout(Instant::now()),
                _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return Ending::Shutdown,
            }
        }
    }

    /// Handles what the socket gave; the ending if the connection is over.
    async fn on_read(
        &mut self,
        message: Option<Result<WsMessage, tungstenite::Error>>,
    ) -> Option<Ending> {
        let Some(message) = message else {
            return Some(Ending::Lost);
        };
        match message {
            Ok(message) => {
                let len = message.len();
                let ending = self.on_ws_message(message);
                if ending.is_none() {
                    self.yield_after(len).await;
                }
                ending
            }
            Err(err) => Some(self.on_ws_error(err)),
        }
    }

    /// Answers from rooms and the writer, handed to the core.
    fn on_event(&mut self, event: ConnEvent) -> Result<(), Ending> {
        match event {
            ConnEvent::Killed => return Err(Ending::Killed),
            ConnEvent::CloseChannel {
                channel,
                generation,
                code,
            } => self.core.room_closed(channel, generation, code),
            ConnEvent::OpenFailed {
                channel,
                generation,
                code,
            } => self.core.open_failed(channel, generation, code),
            ConnEvent::Drained {
                channel,
                generation,
            } => self.core.drained(channel, generation),
        }
        Ok(())
    }

    fn on_ws_error(&mut self, err: tungstenite::Error) -> Ending {
        // tungstenite closes TCP without a Close frame after a read error; send the code that
        // fits ourselves while the peer may still read.
        let code = match &err {
            // The peer went away without a Close frame: 1006, nothing to send.
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                tracing::debug!("connection lost");
                return Ending::Lost;
            }
            tungstenite::Error::Protocol(_) => CloseCode::ProtocolError,
            tungstenite::Error::Utf8(_) => CloseCode::InvalidPayload,
            tungstenite::Error::Capacity(_) => CloseCode::MessageTooBig,
            _ => {
                tracing::debug!(error = %err, "connection lost");
                return Ending::Lost;
            }
        };
        tracing::debug!(error = %err, code = code.as_u16(), "WebSocket violation");
        self.conn.kill(code);
        Ending::Killed
    }

    /// Lets the runtime's other tasks run once this reader has handled [`YIELD_BYTES`] since
    /// it last did. A socket with data ready never makes the reader wait, and tokio's
    /// cooperative budget counts reads, not bytes: without this, a client streaming large
    /// frames would keep a runtime thread for tens of milliseconds, and every connection
    /// scheduled on it would wait (docs/BENCHMARKS.md, S11).
    async fn yield_after(&mut self, len: usize) {
        self.unyielded += len;
        if self.unyielded >= YIELD_BYTES {
            self.unyielded = 0;
            tokio::task::yield_now().await;
        }
    }

    fn on_ws_message(&mut self, message: WsMessage) -> Option<Ending> {
        let now = Instant::now();
        self.received = now;
        match message {
            WsMessage::Binary(bytes) => {
                let metrics = &self.server.metrics;
                metrics.frames_in.fetch_add(1, Ordering::Relaxed);
                metrics
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.core.handle_frame(now, &bytes);
            }
            WsMessage::Text(_) => self.core.handle_text(now),
            WsMessage::Close(frame) => {
                let code = frame.map_or(CloseCode::Normal, |f| CloseCode::from_u16(f.code.into()));
                return Some(Ending::PeerClosed(code));
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {
                self.core.note_traffic(now)
            }
        }
        None
    }

    /// Carries out everything the core has decided, in order. Returns the ending once the
    /// core closes the connection.
    async fn carry_out(&mut self) -> Option<Ending> {
        while let Some(output) = self.core.poll_output() {
            match output {
                ServerOutput::Control(message) => {
                    self.conn.send_control(&message);
                }
                ServerOutput::CloseChannel { channel, code } => {
                    tracing::debug!(%channel, code = code.as_u16(), "channel closed");
                    self.server.metrics.count_channel_close(code.as_u16());
                    self.conn.send_close(channel, code);
                }
                ServerOutput::Send {
                    channel,
                    generation,
                    message,
                } => {
                    self.conn.send(channel, generation, message);
                }
                ServerOutput::Open {
                    channel,
                    doc,
                    requested,
                } => self.open(channel, requested, doc),
                ServerOutput::Sync {
                    channel,
                    generation,
                    room,
                    seq,
                    payload,
                } => {
                    let received = self.received;
                    let Some(budget) = self.take_budget(payload.len()).await else {
                        continue;
                    };
                    let sub = self.subscription(channel, generation);
                    room.submit(RoomJob::Sync {
                        sub,
                        seq,
                        payload,
                        received,
                        budget,
                    });
                }
                ServerOutput::Awareness {
                    channel,
                    generation,
                    room,
                    payload,
                } => {
                    let Some(budget) = self.take_budget(payload.len()).await else {
                        continue;
                    };
                    let sub = self.subscription(channel, generation);
                    room.submit(RoomJob::Awareness {
                        sub,
                        payload,
                        budget,
                    });
                }
                ServerOutput::Request {
                    channel,
                    generation,
                    room,
                    request,
                } => self.on_request(channel, generation, room, request),
                ServerOutput::CloseAfterWrites {
                    channel,
                    generation,
                    room,
                } => {
                    let sub = self.subscription(channel, generation);
                    if !room.submit(RoomJob::CloseAfterWrites { sub }) {
                        self.core.drained(channel, generation);
                    }
                }
                ServerOutput::Release { channel, room } => self.release(channel, &room),
                ServerOutput::Unfinished(bytes) => self.conn.set_unfinished(bytes as u64),
                ServerOutput::CloseConnection { code, after_queue } => {
                    let why = match code {
                        CloseCode::HeartbeatTimeout | CloseCode::HelloExpected => "peer silent",
                        CloseCode::TokenExpired => "token expired",
                        CloseCode::PolicyViolation if after_queue => "too many channel errors",
                        CloseCode::PolicyViolation => "fragmented message not finished in time",
                        _ => "protocol violation",
                    };
                    tracing::debug!(code = code.as_u16(), "{why}");
                    if after_queue {
                        self.conn.close_after_queue(code);
                    } else {
                        self.conn.kill(code);
                    }
                    return Some(Ending::Killed);
                }
            }
        }
        None
    }

    /// The core asks to open `doc` on `channel`: the token decides the access, the registry
    /// the room.
    fn open(&mut self, channel: ChannelId, requested: Access, doc: DocId) {
        let Some(allowed) = self.claims.access_for(doc.as_str()) else {
            return self.core.refuse_open(channel, ChannelCode::Forbidden);
        };
        let access = Access::granted(requested, allowed);
        let Some(room) = self.server.rooms.acquire(&doc) else {
            return self.core.refuse_open(channel, ChannelCode::Overloaded);
        };
        let generation = match self.core.accept_open(channel, access, room.clone()) {
            Ok(generation) => generation,
            Err(room) => return self.server.rooms.release(&room),
        };
        self.server.metrics.channels.fetch_add(1, Ordering::Relaxed);
        self.conn.channel_opened(channel, generation);
        let sub = self.subscription(channel, generation);
        if !room.submit(RoomJob::Open { sub, access }) {
            self.core
                .open_failed(channel, generation, ChannelCode::StorageFailure);
            return;
        }
        tracing::debug!(%channel, %doc, ?access, "opening channel");
    }

    fn subscription(&self, channel: ChannelId, generation: u64) -> Subscription {
        Subscription {
            key: SubKey {
                conn: self.conn.id(),
                channel,
            },
            conn: self.conn.clone(),
            generation,
            author: self.author(),
        }
    }

    /// The token holder's display name (its user ID if the token names nobody).
    fn author(&self) -> Arc<str> {
        self.author
            .get_or_init(|| {
                let name = if self.claims.name.is_empty() {
                    &self.claims.sub
                } else {
                    &self.claims.name
                };
                Arc::from(name.as_str())
            })
            .clone()
    }

    /// A request the core read: the trash on channel 0 (answered in the background), a
    /// document's versions on its channel (answered by its room's task). At most
    /// [`MAX_REQUESTS_IN_FLIGHT`] at once; more are refused with 4429.
    fn on_request(
        &mut self,
        channel: ChannelId,
        generation: u64,
        room: Option<(RoomHandle, Access)>,
        request: Request,
    ) {
        let requests = self
            .requests
            .get_or_init(|| Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT)));
        let Ok(permit) = requests.clone().try_acquire_owned() else {
            let code = ChannelCode::TooManyChannels.as_u16();
            let refusal = Reply::refused(request.id, code, "too many requests in flight");
            let message = Message::Reply(refusal.encode());
            if channel.is_control() {
                self.conn.send_control(&message);
            } else {
                self.conn.send(channel, generation, message);
            }
            return;
        };
        match room {
            None => {
                let (server, claims, conn) =
                    (self.server.clone(), self.claims.clone(), self.conn.clone());
                tokio::spawn(async move {
                    let reply = crate::trash::handle(&server, &claims, request).await;
                    conn.send_control(&Message::Reply(reply.encode()));
                    drop(permit);
                });
            }
            Some((room, access)) => {
                room.submit(RoomJob::Request(VersionRequest {
                    reply_to: ReplyTo {
                        conn: self.conn.clone(),
                        channel,
                        generation,
                    },
                    access,
                    author: self.author(),
                    request,
                    _permit: permit,
                }));
            }
        }
    }

    /// Takes `len` bytes of this connection's allowance for queued work, waiting (and so
    /// reading nothing more from this client) while its earlier messages are being handled.
    /// Small messages draw on an allowance of their own.
    /// The message is charged to the memory budget meanwhile.
    async fn take_budget(&self, len: usize) -> Option<QueuedWork> {
        let (budget, total) = if len <= SMALL_MESSAGE_BYTES {
            (&self.small_budget, SMALL_MESSAGES_BUDGET)
        } else {
            let total = self.server.config.limits.max_message_size as usize;
            (&self.budget, total)
        };
        let weight = (len + JOB_OVERHEAD).min(total) as u32;
        let allowance = budget.clone().acquire_many_owned(weight).await.ok()?;
        let charge = self.server.memory.charge(Use::Incoming, len as u64);
        Some(QueuedWork::new(allowance, charge))
    }

    fn release(&self, channel: ChannelId, room: &RoomHandle) {
        room.submit(RoomJob::Leave {
            key: SubKey {
                conn: self.conn.id(),
                channel,
            },
        });
        self.server.rooms.release(room);
        self.server.metrics.channels.fetch_sub(1, Ordering::Relaxed);
    }

    /// Resolves once every write received on this connection's channels is durable and its
    /// ACK queued.
    async fn flush_channels(&self) {
        let mut pending = Vec::new();
        for room in self.core.rooms() {
            let (done, flushed) = oneshot::channel();
            if room.submit(RoomJob::Flush(done)) {
                pending.push(flushed);
            }
        }
        for flushed in pending {
            let _ = flushed.await;
        }
    }

    fn close_all_channels(&mut self) {
        self.core.release_all();
        while let Some(output) = self.core.poll_output() {
            if let ServerOutput::Release { channel, room } = output {
                self.release(channel, &room);
            }
        }
    }
}

/// When a token that expires at `exp` (Unix seconds) runs out, on the monotonic clock.
fn token_deadline(exp: u64) -> Option<Instant> {
    let now = crate::auth::unix_now();
    let left = exp.checked_sub(now)?;
    // Far-future expiries (no-auth mode) never fire.
    (left < 10 * 365 * 24 * 3600).then(|| Instant::now() + Duration::from_secs(left))
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
