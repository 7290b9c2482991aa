//! One client connection: the reader loop (this file) decodes mux frames and dispatches them;
//! work on documents goes to each room's own task ([`crate::room_task`]) and is never waited
//! for here, so a busy document holds up neither the connection's other channels nor its
//! heartbeat. The writer task ([`crate::outbox`]) owns the socket's sending half and writes
//! the schedule of outgoing frames, and holds the reader's events. The reader also runs the
//! heartbeat and the token's expiry, and on shutdown waits for this connection's writes to be
//! durable and acknowledged before closing with 1001.

mod channel;
mod error_budget;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use quire_protocol::frame::peek_channel;
use quire_protocol::request::{Reply, Request};
use quire_protocol::ysync::is_write;
use quire_protocol::{
    Access, ChannelCode, ChannelId, CloseCode, ConnId, DocId, Frame, FrameError, Heartbeat,
    HeartbeatEvent, Limits, Message, Welcome, PROTOCOL_REVISION,
};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::Instrument;

use self::channel::{ChannelState, OpenChannel};
use self::error_budget::ErrorBudget;
use crate::auth::Claims;
use crate::memory::Use;
use crate::outbox::{self, ConnEvent, YIELD_BYTES};
pub use crate::outbox::{ConnHandle, QueueOnly};
use crate::room_task::{QueuedWork, RoomJob, Subscription};
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

        let mut reader = Reader {
            server: server.clone(),
            conn: handle.clone(),
            claims,
            channels: HashMap::new(),
            hello: false,
            error_budget: ErrorBudget::new(Instant::now()),
            next_generation: 1,
            heartbeat: Heartbeat::new(Instant::now(), config.heartbeat),
            budget: Arc::new(Semaphore::new(config.limits.max_message_size as usize)),
            small_budget: Arc::new(Semaphore::new(SMALL_MESSAGES_BUDGET)),
            closing: false,
            unyielded: 0,
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
    channels: HashMap<ChannelId, ChannelState>,
    hello: bool,
    error_budget: ErrorBudget,
    /// The generation the next opened channel gets (see `OpenChannel::generation`).
    next_generation: u64,
    heartbeat: Heartbeat,
    /// Bytes of this connection's large messages queued on rooms' tasks and not yet handled:
    /// past `max_message_size` the reader stops reading, which slows this client alone.
    budget: Arc<Semaphore>,
    /// The same for small messages, kept apart so that a small edit on one channel never
    /// waits for a large message on another to be applied.
    small_budget: Arc<Semaphore>,
    /// The connection is closing after its queue (the error budget ran out): read no more.
    closing: bool,
    /// Bytes read since the reader last yielded to other tasks.
    unyielded: usize,
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
        let expiry = token_deadline(self.claims.exp);
        loop {
            let wake = tokio::time::Instant::from_std(self.heartbeat.poll_timeout());
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return Ending::Lost };
                    match message {
                        Ok(message) => {
                            let len = message.len();
                            if let Some(ending) = self.on_ws_message(message).await {
                                return ending;
                            }
                            if self.closing {
                                return Ending::Killed;
                            }
                            self.yield_after(len).await;
                        }
                        Err(err) => return self.on_ws_error(err),
                    }
                }
                event = self.conn.next_event() => {
                    if let Some(ending) = self.on_event(event) {
                        return ending;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    match self.heartbeat.handle_timeout(Instant::now()) {
                        Some(HeartbeatEvent::SendPing(nonce)) if self.hello => {
                            self.conn.send_control(&Message::Ping(nonce));
                        }
                        Some(HeartbeatEvent::Expired) => {
                            let code = if self.hello { CloseCode::HeartbeatTimeout } else { CloseCode::HelloExpected };
                            tracing::debug!(code = code.as_u16(), "peer silent");
                            self.conn.kill(code);
                        }
                        Some(HeartbeatEvent::SendPing(_)) | None => {}
                    }
                    if self.fragment_overdue() {
                        self.violation(CloseCode::PolicyViolation, "fragmented message not finished in time");
                    }
                }
                _ = sleep_until_opt(expiry) => {
                    tracing::debug!("token expired");
                    self.conn.kill(CloseCode::TokenExpired);
                }
                _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return Ending::Shutdown,
            }
        }
    }

    fn on_event(&mut self, event: ConnEvent) -> Option<Ending> {
        match event {
            ConnEvent::Killed => return Some(Ending::Killed),
            ConnEvent::CloseChannel {
                channel,
                generation,
                code,
            } => {
                if self.generation_of(channel) == Some(generation) {
                    self.close_channel(channel, code);
                }
            }
            ConnEvent::OpenFailed {
                channel,
                generation,
                code,
            } => {
                if self.generation_of(channel) == Some(generation) {
                    // No OPENED went out: this is a refusal, after which the ID is free at
                    // once on both ends (§6.2).
                    if let Some(ChannelState::Open(open) | ChannelState::Draining(open)) =
                        self.channels.remove(&channel)
                    {
                        self.release(channel, open);
                    }
                    self.refuse(channel, code);
                }
            }
            ConnEvent::Drained {
                channel,
                generation,
            } => {
                if matches!(self.channels.get(&channel), Some(ChannelState::Draining(open)) if open.generation == generation)
                {
                    if let Some(ChannelState::Draining(open)) = self.channels.remove(&channel) {
                        self.release(channel, open);
                        self.send_close(channel, ChannelCode::Normal);
                    }
                }
            }
        }
        None
    }

    /// The generation of `channel` if it is open or draining.
    fn generation_of(&self, channel: ChannelId) -> Option<u64> {
        match self.channels.get(&channel) {
            Some(ChannelState::Open(open) | ChannelState::Draining(open)) => Some(open.generation),
            Some(ChannelState::Closing) | None => None,
        }
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

    async fn on_ws_message(&mut self, message: WsMessage) -> Option<Ending> {
        self.heartbeat.on_traffic(Instant::now());
        match message {
            WsMessage::Binary(bytes) => {
                self.server
                    .metrics
                    .frames_in
                    .fetch_add(1, Ordering::Relaxed);
                self.server
                    .metrics
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.on_frame_bytes(&bytes).await
            }
            WsMessage::Text(_) => self.violation(CloseCode::UnsupportedData, "text frame"),
            WsMessage::Close(frame) => {
                let code = frame.map_or(CloseCode::Normal, |f| CloseCode::from_u16(f.code.into()));
                Some(Ending::PeerClosed(code))
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => None,
        }
    }

    fn violation(&self, code: CloseCode, what: &str) -> Option<Ending> {
        tracing::debug!(code = code.as_u16(), what, "protocol violation");
        self.conn.kill(code);
        None
    }

    async fn on_frame_bytes(&mut self, bytes: &[u8]) -> Option<Ending> {
        let frame = match Frame::decode(bytes, &self.server.config.limits) {
            Ok(frame) => frame,
            Err(err) => return self.on_frame_error(bytes, err),
        };
        if !self.hello && !matches!(frame.message, Message::Hello(_)) {
            return self.violation(CloseCode::HelloExpected, "frame before hello");
        }
        let channel = frame.channel;
        tracing::trace!(%channel, kind = frame.message.kind(), len = bytes.len(), "frame in");
        match frame.message {
            Message::Hello(hello) => {
                if self.hello {
                    return self.violation(CloseCode::ProtocolError, "second hello");
                }
                // §5.1: revision 1 is the only one there is; a HELLO fits the smallest frame
                // limit any server may announce.
                if hello.revision != PROTOCOL_REVISION {
                    return self
                        .violation(CloseCode::ProtocolError, "unsupported protocol revision");
                }
                if bytes.len() > Limits::MIN_FRAME_SIZE as usize {
                    return self.violation(CloseCode::ProtocolError, "HELLO over 1024 bytes");
                }
                self.hello = true;
                tracing::debug!(client = %hello.client, revision = hello.revision, "hello");
                let config = &self.server.config;
                let welcome = Welcome {
                    conn_id: self.conn.id().0,
                    heartbeat_interval_ms: config.heartbeat.interval.as_millis() as u32,
                    heartbeat_timeout_ms: config.heartbeat.timeout.as_millis() as u32,
                    limits: config.limits,
                };
                self.conn.send_control(&Message::Welcome(welcome));
            }
            Message::Ping(nonce) => {
                self.conn.send_control(&Message::Pong(nonce));
            }
            Message::Pong(nonce) => {
                self.heartbeat.on_pong(Instant::now(), nonce);
            }
            Message::Open { access, doc } => return self.open(channel, access, doc),
            Message::Close { .. } => return self.on_client_close(channel),
            Message::Request(body) if channel.is_control() => return self.on_control_request(body),
            message @ (Message::Sync(_)
            | Message::Awareness(_)
            | Message::Fragment(_)
            | Message::Request(_)) => {
                return self.on_channel_data(channel, message).await;
            }
            Message::Welcome(_) | Message::Opened { .. } | Message::Ack(_) | Message::Reply(_) => {
                return self.violation(CloseCode::ProtocolError, "server-only message from client");
            }
        }
        None
    }

    fn on_frame_error(&mut self, bytes: &[u8], err: FrameError) -> Option<Ending> {
        match (err.channel_code(), peek_channel(bytes)) {
            (Some(code), Some(channel)) if self.hello => {
                tracing::debug!(%channel, error = %err, "open refused");
                if self.reassembling(channel) {
                    return self
                        .violation(CloseCode::ProtocolError, "OPEN inside a fragmented message");
                }
                if self.generation_of(channel).is_some() {
                    self.close_channel(channel, code);
                } else if !self.channels.contains_key(&channel) {
                    self.refuse(channel, code);
                }
                None
            }
            _ => self.violation(err.close_code(), &err.to_string()),
        }
    }

    fn open(&mut self, channel: ChannelId, requested: Access, doc: DocId) -> Option<Ending> {
        if self.reassembling(channel) {
            // §7: only the rest of the message may follow its first fragment.
            return self.violation(CloseCode::ProtocolError, "OPEN inside a fragmented message");
        }
        if self.channels.contains_key(&channel) {
            tracing::debug!(%channel, "open on a channel in use");
            self.close_channel(channel, ChannelCode::ChannelInUse);
            return None;
        }
        let open = self
            .channels
            .values()
            .filter(|c| matches!(c, ChannelState::Open(_) | ChannelState::Draining(_)))
            .count();
        if open >= self.server.config.limits.max_channels as usize {
            self.refuse(channel, ChannelCode::TooManyChannels);
            return None;
        }
        let Some(allowed) = self.claims.access_for(doc.as_str()) else {
            self.refuse(channel, ChannelCode::Forbidden);
            return None;
        };
        let access = if requested.can_write() && allowed.can_write() {
            Access::Write
        } else {
            Access::Read
        };
        let Some(room) = self.server.rooms.acquire(&doc) else {
            self.refuse(channel, ChannelCode::Overloaded);
            return None;
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        self.conn.channel_opened(channel, generation);
        let sub = self.subscription(channel, generation);
        if !room.submit(RoomJob::Open { sub, access }) {
            self.server.rooms.release(&room);
            self.refuse(channel, ChannelCode::StorageFailure);
            return None;
        }
        tracing::debug!(%channel, %doc, ?access, "opening channel");
        self.server.metrics.channels.fetch_add(1, Ordering::Relaxed);
        self.channels.insert(
            channel,
            ChannelState::Open(OpenChannel {
                room,
                generation,
                access,
                writes: 0,
                reassembler: Default::default(),
                fragment_started: None,
            }),
        );
        None
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

    fn refuse(&mut self, channel: ChannelId, code: ChannelCode) {
        tracing::debug!(%channel, code = code.as_u16(), "open refused");
        self.send_close(channel, code);
    }

    async fn on_channel_data(&mut self, channel: ChannelId, message: Message) -> Option<Ending> {
        let max_message = self.server.config.limits.max_message_size;
        // Per channel, the reassembler stops at max_message_size; across channels the sum of
        // unfinished messages is held to the same limit, so one connection never buffers more
        // than one maximal message however many channels it interleaves (PROTOCOL.md §7).
        let buffered_piece = match &message {
            Message::Fragment(piece) => Some(piece.len()),
            Message::Sync(piece) | Message::Awareness(piece) if self.reassembling(channel) => {
                Some(piece.len())
            }
            _ => None,
        };
        if let Some(len) = buffered_piece {
            if self.unfinished_bytes() + len > max_message as usize {
                return self.violation(
                    CloseCode::MessageTooBig,
                    "unfinished messages on the connection above max_message_size",
                );
            }
        }
        let open = match self.channels.get_mut(&channel) {
            Some(ChannelState::Open(open)) => open,
            Some(ChannelState::Closing | ChannelState::Draining(_)) => return None,
            None => {
                self.send_close(channel, ChannelCode::UnknownChannel);
                return None;
            }
        };
        let message = match open.reassembler.push(message, max_message) {
            Ok(Some(message)) => {
                open.fragment_started = None;
                if buffered_piece.is_some() {
                    self.charge_unfinished();
                }
                message
            }
            Ok(None) => {
                open.fragment_started.get_or_insert_with(Instant::now);
                self.charge_unfinished();
                return None;
            }
            Err(err) => return self.violation(err.close_code(), &err.to_string()),
        };
        match message {
            Message::Sync(payload) => self.on_sync(channel, payload).await,
            Message::Awareness(payload) => self.on_awareness(channel, payload).await,
            Message::Request(body) => self.on_channel_request(channel, &body),
            _ => None,
        }
    }

    /// Reads a request body; `None` (and the connection closed with 1002) if it has no ID to
    /// answer, `Some(Err)` with the refusal to send if it has one.
    fn read_request(&self, body: &[u8]) -> Option<Result<(Request, OwnedSemaphorePermit), Reply>> {
        let request = match Request::decode(body) {
            Ok(request) => request,
            Err(err) => {
                let id = match err.id() {
                    Some(id) => id,
                    None => {
                        self.violation(CloseCode::ProtocolError, "request without an ID");
                        return None;
                    }
                };
                let code = ChannelCode::BadRequest.as_u16();
                return Some(Err(Reply::refused(id, code, err.to_string())));
            }
        };
        let requests = self
            .requests
            .get_or_init(|| Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT)));
        match requests.clone().try_acquire_owned() {
            Ok(permit) => Some(Ok((request, permit))),
            Err(_) => {
                let code = ChannelCode::TooManyChannels.as_u16();
                Some(Err(Reply::refused(
                    request.id,
                    code,
                    "too many requests in flight",
                )))
            }
        }
    }

    /// A request on channel 0: the trash (§5.4), answered in the background.
    fn on_control_request(&mut self, body: Vec<u8>) -> Option<Ending> {
        let (request, permit) = match self.read_request(&body)? {
            Ok(read) => read,
            Err(refusal) => {
                self.conn.send_control(&Message::Reply(refusal.encode()));
                return None;
            }
        };
        let (server, claims, conn) = (self.server.clone(), self.claims.clone(), self.conn.clone());
        tokio::spawn(async move {
            let reply = crate::trash::handle(&server, &claims, request).await;
            conn.send_control(&Message::Reply(reply.encode()));
            drop(permit);
        });
        None
    }

    /// A request on a document channel: its versions (§6.9), answered by its room's task.
    fn on_channel_request(&mut self, channel: ChannelId, body: &[u8]) -> Option<Ending> {
        let Some(ChannelState::Open(open)) = self.channels.get(&channel) else {
            return None;
        };
        let (generation, access, room) = (open.generation, open.access, open.room.clone());
        let sub = self.subscription(channel, generation);
        let (request, permit) = match self.read_request(body)? {
            Ok(read) => read,
            Err(refusal) => {
                self.conn
                    .send(channel, generation, Message::Reply(refusal.encode()));
                return None;
            }
        };
        room.submit(RoomJob::Request(VersionRequest {
            reply_to: ReplyTo {
                conn: sub.conn,
                channel,
                generation,
            },
            access,
            author: self.author(),
            request,
            _permit: permit,
        }));
        None
    }

    /// Whether a fragmented message began longer ago than the limit allows (§7). Checked at
    /// every heartbeat tick, so the connection is closed within one interval after it.
    fn fragment_overdue(&self) -> bool {
        let limit = self.server.config.fragment_timeout;
        self.channels.values().any(|state| {
            matches!(state, ChannelState::Open(open)
                if open.fragment_started.is_some_and(|started| started.elapsed() > limit))
        })
    }

    /// Whether a fragmented message is in progress on `channel`.
    fn reassembling(&self, channel: ChannelId) -> bool {
        matches!(self.channels.get(&channel), Some(ChannelState::Open(open)) if open.reassembler.in_progress())
    }

    /// Charges the unfinished messages to the memory budget.
    fn charge_unfinished(&self) {
        self.conn.set_unfinished(self.unfinished_bytes() as u64);
    }

    /// Bytes buffered in this connection's unfinished fragmented messages, all channels.
    fn unfinished_bytes(&self) -> usize {
        self.channels
            .values()
            .map(|state| match state {
                ChannelState::Open(open) => open.reassembler.buffered(),
                ChannelState::Draining(_) | ChannelState::Closing => 0,
            })
            .sum()
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

    async fn on_sync(&mut self, channel: ChannelId, payload: Vec<u8>) -> Option<Ending> {
        let received = Instant::now();
        let Some(ChannelState::Open(open)) = self.channels.get_mut(&channel) else {
            return None;
        };
        if is_write(&payload) {
            open.writes += 1;
            if !open.access.can_write() {
                self.close_channel(channel, ChannelCode::ReadOnly);
                return None;
            }
        }
        let (seq, generation, room) = (open.writes, open.generation, open.room.clone());
        let budget = self.take_budget(payload.len()).await?;
        let sub = self.subscription(channel, generation);
        room.submit(RoomJob::Sync {
            sub,
            seq,
            payload,
            received,
            budget,
        });
        None
    }

    async fn on_awareness(&mut self, channel: ChannelId, payload: Vec<u8>) -> Option<Ending> {
        let Some(ChannelState::Open(open)) = self.channels.get(&channel) else {
            return None;
        };
        let (generation, room) = (open.generation, open.room.clone());
        let budget = self.take_budget(payload.len()).await?;
        let sub = self.subscription(channel, generation);
        room.submit(RoomJob::Awareness {
            sub,
            payload,
            budget,
        });
        None
    }

    /// The client sent CLOSE: reply once every write it sent on the channel before is durable
    /// and acknowledged (unless the CLOSE answers ours), then release the channel.
    fn on_client_close(&mut self, channel: ChannelId) -> Option<Ending> {
        if self.reassembling(channel) {
            // §7: only the rest of the message may follow its first fragment.
            return self.violation(
                CloseCode::ProtocolError,
                "CLOSE inside a fragmented message",
            );
        }
        match self.channels.remove(&channel) {
            Some(ChannelState::Open(open)) => {
                let sub = self.subscription(channel, open.generation);
                if open.room.submit(RoomJob::CloseAfterWrites { sub }) {
                    self.channels.insert(channel, ChannelState::Draining(open));
                } else {
                    self.release(channel, open);
                    self.send_close(channel, ChannelCode::Normal);
                }
            }
            Some(draining @ ChannelState::Draining(_)) => {
                self.channels.insert(channel, draining);
            }
            Some(ChannelState::Closing) | None => {}
        }
        None
    }

    /// Server-initiated close of an open channel: tell the client, leave the room, and ignore
    /// the channel until the client's CLOSE arrives. A draining channel already had the
    /// client's CLOSE: this CLOSE is the reply, and the channel is free.
    fn close_channel(&mut self, channel: ChannelId, code: ChannelCode) {
        match self.channels.remove(&channel) {
            Some(ChannelState::Open(open)) => {
                let was_reassembling = open.reassembler.in_progress();
                self.release(channel, open);
                self.send_close(channel, code);
                self.channels.insert(channel, ChannelState::Closing);
                if was_reassembling {
                    self.charge_unfinished();
                }
            }
            Some(ChannelState::Draining(open)) => {
                self.release(channel, open);
                self.send_close(channel, code);
            }
            Some(ChannelState::Closing) => {
                self.channels.insert(channel, ChannelState::Closing);
            }
            None => {}
        }
    }

    fn release(&self, channel: ChannelId, open: OpenChannel) {
        open.room.submit(RoomJob::Leave {
            key: SubKey {
                conn: self.conn.id(),
                channel,
            },
        });
        self.server.rooms.release(&open.room);
        self.server.metrics.channels.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends CLOSE on `channel` (releasing it on the connection's side). Codes in the 44xx
    /// range are the client's errors and count against its budget ([`ErrorBudget`]); past it
    /// the connection is closed with 1008, after the CLOSEs already queued.
    fn send_close(&mut self, channel: ChannelId, code: ChannelCode) {
        self.server.metrics.count_channel_close(code.as_u16());
        self.conn.send_close(channel, code);
        if self.error_budget.spend(code, Instant::now()) && !self.closing {
            tracing::debug!("too many channel errors");
            self.conn.close_after_queue(CloseCode::PolicyViolation);
            self.closing = true;
        }
    }

    /// Resolves once every write received on this connection's channels is durable and its
    /// ACK queued.
    async fn flush_channels(&self) {
        let mut pending = Vec::new();
        for state in self.channels.values() {
            if let ChannelState::Open(open) | ChannelState::Draining(open) = state {
                let (done, flushed) = oneshot::channel();
                if open.room.submit(RoomJob::Flush(done)) {
                    pending.push(flushed);
                }
            }
        }
        for flushed in pending {
            let _ = flushed.await;
        }
    }

    fn close_all_channels(&mut self) {
        for (channel, state) in std::mem::take(&mut self.channels) {
            if let ChannelState::Open(open) | ChannelState::Draining(open) = state {
                self.release(channel, open);
            }
        }
    }
}

/// When a token that expires at `exp` (Unix seconds) runs out, on the tokio clock.
fn token_deadline(exp: u64) -> Option<tokio::time::Instant> {
    let now = crate::auth::unix_now();
    let left = exp.checked_sub(now)?;
    // Far-future expiries (no-auth mode) never fire.
    (left < 10 * 365 * 24 * 3600).then(|| tokio::time::Instant::now() + Duration::from_secs(left))
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
