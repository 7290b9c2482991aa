//! One client connection: the reader loop (this file) decodes mux frames and drives channels;
//! the writer task (`outbound`) owns the socket's sending half; `lane` holds the small queues
//! for control frames and the reader's events. The reader also runs the
//! heartbeat and the token's expiry, and on shutdown flushes this connection's writes before
//! closing with 1001.

mod channel;
mod lane;
mod outbound;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use quire_protocol::frame::peek_channel;
use quire_protocol::ysync::{decode_awareness, decode_sync, is_write, SyncPayload};
use quire_protocol::{
    Access, ChannelCode, ChannelId, CloseCode, ConnId, DocId, Frame, FrameError, Heartbeat,
    HeartbeatEvent, Message, Welcome,
};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::Instrument;

use self::channel::{ChannelState, OpenChannel};
pub(crate) use self::outbound::ConnEvent;
pub use self::outbound::{ConnHandle, QueueOnly};
use crate::auth::Claims;
use crate::persist::{AckTarget, Job};
use crate::room::SubKey;
use crate::server::{ConnectionSlot, Server};
use crate::store::Store;

/// A connection that causes more channel errors than this is closed with 1008.
const MAX_CHANNEL_ERRORS: u32 = 100;
/// How long to wait for the peer's Close frame after sending ours.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

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
        let (handle, queues) = ConnHandle::new(
            conn_id,
            config.queue_depth,
            config.max_queued_bytes,
            config.limits.max_frame_size,
            server.metrics.clone(),
        );
        let (sink, stream) = ws.split();
        let writer = tokio::spawn(
            outbound::run_writer(handle.clone(), queues.frames, sink).in_current_span(),
        );
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
            channel_errors: 0,
            next_generation: 1,
            heartbeat: Heartbeat::new(Instant::now(), config.heartbeat),
        };
        let ending = reader.run(stream).await;
        if let Ending::Shutdown = ending {
            // The channels stay open until their writes are acknowledged.
            server.persister.flush().await;
        }
        reader.close_all_channels();
        match ending {
            Ending::Shutdown => handle.close_after_queue(CloseCode::GoingAway),
            Ending::PeerClosed(code) => handle.close_after_queue(code),
            Ending::Killed => {}
            Ending::Lost => handle.kill(CloseCode::Abnormal),
        }
        let code = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT * 2, writer)
            .await
            .ok()
            .and_then(Result::ok);
        let code = code.unwrap_or(CloseCode::Abnormal);
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
    /// The connection was killed with a code (the writer sends it).
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
    channel_errors: u32,
    /// The generation the next opened channel gets (see `OpenChannel::generation`).
    next_generation: u64,
    heartbeat: Heartbeat,
}

impl<S: Store> Reader<S> {
    async fn run<R>(&mut self, mut stream: R) -> Ending
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
                            if let Some(ending) = self.on_ws_message(message).await {
                                return ending;
                            }
                        }
                        Err(err) => return self.on_ws_error(err),
                    }
                }
                event = self.conn.next_event() => match event {
                    ConnEvent::Killed => return self.drain_after_kill(&mut stream).await,
                    ConnEvent::CloseChannel { channel, generation, code } => {
                        if matches!(self.channels.get(&channel), Some(ChannelState::Open(open)) if open.generation == generation) {
                            self.close_channel(channel, code);
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake) => match self.heartbeat.handle_timeout(Instant::now()) {
                    Some(HeartbeatEvent::SendPing(nonce)) if self.hello => {
                        self.conn.send(ChannelId::CONTROL, &Message::Ping(nonce));
                    }
                    Some(HeartbeatEvent::Expired) => {
                        let code = if self.hello { CloseCode::HeartbeatTimeout } else { CloseCode::HelloExpected };
                        tracing::debug!(code = code.as_u16(), "peer silent");
                        self.conn.kill(code);
                    }
                    Some(HeartbeatEvent::SendPing(_)) | None => {}
                },
                _ = sleep_until_opt(expiry) => {
                    tracing::debug!("token expired");
                    self.conn.kill(CloseCode::TokenExpired);
                }
                _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return Ending::Shutdown,
            }
        }
    }

    /// After a kill the writer sends the Close; keep reading briefly for the peer's answer so
    /// the close handshake completes and TCP ends cleanly.
    async fn drain_after_kill<R>(&mut self, stream: &mut R) -> Ending
    where
        R: Stream<Item = Result<WsMessage, tungstenite::Error>> + Unpin,
    {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
        Ending::Killed
    }

    fn on_ws_error(&mut self, err: tungstenite::Error) -> Ending {
        // tungstenite closes TCP without a Close frame after a read error; send the code that
        // fits ourselves while the peer may still read.
        let code = match &err {
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
                self.hello = true;
                tracing::debug!(client = %hello.client, revision = hello.revision, "hello");
                let config = &self.server.config;
                let welcome = Welcome {
                    conn_id: self.conn.id().0,
                    heartbeat_interval_ms: config.heartbeat.interval.as_millis() as u32,
                    heartbeat_timeout_ms: config.heartbeat.timeout.as_millis() as u32,
                    limits: config.limits,
                };
                self.conn
                    .send(ChannelId::CONTROL, &Message::Welcome(welcome));
            }
            Message::Ping(nonce) => {
                self.conn.send(ChannelId::CONTROL, &Message::Pong(nonce));
            }
            Message::Pong(nonce) => {
                self.heartbeat.on_pong(Instant::now(), nonce);
            }
            Message::Open { access, doc } => self.open(channel, access, doc).await,
            Message::Close { .. } => return self.on_client_close(channel),
            message @ (Message::Sync(_) | Message::Awareness(_) | Message::Fragment(_)) => {
                return self.on_channel_data(channel, message).await;
            }
            Message::Welcome(_) | Message::Opened { .. } | Message::Ack(_) => {
                return self.violation(CloseCode::ProtocolError, "server-only message from client");
            }
        }
        None
    }

    fn on_frame_error(&mut self, bytes: &[u8], err: FrameError) -> Option<Ending> {
        match (err.channel_code(), peek_channel(bytes)) {
            (Some(code), Some(channel)) if self.hello => {
                tracing::debug!(%channel, error = %err, "open refused");
                if let Some(ChannelState::Open(_)) = self.channels.get(&channel) {
                    self.close_channel(channel, code);
                } else {
                    self.send_close(channel, code);
                }
                None
            }
            _ => self.violation(err.close_code(), &err.to_string()),
        }
    }

    async fn open(&mut self, channel: ChannelId, requested: Access, doc: DocId) {
        if self.channels.contains_key(&channel) {
            tracing::debug!(%channel, "open on a channel in use");
            self.close_channel(channel, ChannelCode::ChannelInUse);
            return;
        }
        let open = self
            .channels
            .values()
            .filter(|c| matches!(c, ChannelState::Open(_)))
            .count();
        if open >= self.server.config.limits.max_channels as usize {
            self.refuse(channel, ChannelCode::TooManyChannels);
            return;
        }
        let Some(allowed) = self.claims.access_for(doc.as_str()) else {
            self.refuse(channel, ChannelCode::Forbidden);
            return;
        };
        let access = if requested.can_write() && allowed.can_write() {
            Access::Write
        } else {
            Access::Read
        };
        let room = match self.server.rooms.acquire(&doc).await {
            Ok(room) => room,
            Err(err) => {
                tracing::error!(%doc, error = %err, "loading document failed");
                self.refuse(channel, ChannelCode::StorageFailure);
                return;
            }
        };
        let key = SubKey {
            conn: self.conn.id(),
            channel,
        };
        let (step1, awareness) = room.subscribe(key, self.conn.clone(), access);
        let generation = self.next_generation;
        self.next_generation += 1;
        self.conn.channel_opened(channel, generation);
        self.conn.send(channel, &Message::Opened { access });
        if let Some(step1) = step1 {
            self.conn.send(channel, &Message::Sync(step1));
        }
        if let Some(awareness) = awareness {
            self.conn.send(channel, &Message::Awareness(awareness));
        }
        tracing::debug!(%channel, %doc, ?access, "channel opened");
        self.server.metrics.channels.fetch_add(1, Ordering::Relaxed);
        self.channels.insert(
            channel,
            ChannelState::Open(OpenChannel {
                room,
                generation,
                access,
                writes: 0,
                reassembler: Default::default(),
            }),
        );
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
            Some(ChannelState::Closing) => return None,
            None => {
                self.send_close(channel, ChannelCode::UnknownChannel);
                return None;
            }
        };
        let message = match open.reassembler.push(message, max_message) {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(err) => return self.violation(err.close_code(), &err.to_string()),
        };
        match message {
            Message::Sync(payload) => self.on_sync(channel, payload).await,
            Message::Awareness(payload) => self.on_awareness(channel, payload),
            _ => None,
        }
    }

    /// Whether a fragmented message is in progress on `channel`.
    fn reassembling(&self, channel: ChannelId) -> bool {
        matches!(self.channels.get(&channel), Some(ChannelState::Open(open)) if open.reassembler.in_progress())
    }

    /// Bytes buffered in this connection's unfinished fragmented messages, all channels.
    fn unfinished_bytes(&self) -> usize {
        self.channels
            .values()
            .map(|state| match state {
                ChannelState::Open(open) => open.reassembler.buffered(),
                ChannelState::Closing => 0,
            })
            .sum()
    }

    async fn on_sync(&mut self, channel: ChannelId, payload: Vec<u8>) -> Option<Ending> {
        let received = Instant::now();
        let Some(ChannelState::Open(open)) = self.channels.get_mut(&channel) else {
            return None;
        };
        let write = is_write(&payload);
        if write {
            open.writes += 1;
            if !open.access.can_write() {
                self.close_channel(channel, ChannelCode::ReadOnly);
                return None;
            }
        }
        let decoded = match decode_sync(&payload) {
            Ok(decoded) => decoded,
            Err(err) => {
                tracing::debug!(%channel, error = %err, "undecodable sync message");
                self.close_channel(channel, ChannelCode::InvalidUpdate);
                return None;
            }
        };
        let room = open.room.clone();
        let seq = open.writes;
        let generation = open.generation;
        match decoded {
            SyncPayload::Step1(state_vector) => {
                let step2 = room.answer_step1(&state_vector);
                self.conn.send(channel, &Message::Sync(step2));
            }
            SyncPayload::Step2(update) | SyncPayload::Update(update) => {
                let raw = quire_protocol::ysync::update_bytes(&payload);
                let key = SubKey {
                    conn: self.conn.id(),
                    channel,
                };
                let server = self.server.clone();
                let Some(slot) = server.persister.reserve().await else {
                    return None; // the persister is gone: the server is stopping
                };
                let ack = AckTarget {
                    conn: self.conn.clone(),
                    channel,
                    generation,
                    seq,
                };
                let persist = |changed: bool| {
                    slot.submit(Job::Write {
                        room: room.clone(),
                        data: changed.then(|| raw.to_vec()),
                        ack,
                        received,
                    })
                };
                match room.apply(key, update, raw, &payload, persist) {
                    Ok(changed) => {
                        if changed {
                            self.server
                                .metrics
                                .updates_applied
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%channel, doc = %room.id, error = %err, "update not applied");
                        self.close_channel(channel, ChannelCode::InvalidUpdate);
                    }
                }
            }
        }
        None
    }

    fn on_awareness(&mut self, channel: ChannelId, payload: Vec<u8>) -> Option<Ending> {
        let Some(ChannelState::Open(open)) = self.channels.get(&channel) else {
            return None;
        };
        match decode_awareness(&payload) {
            Ok(update) => {
                let key = SubKey {
                    conn: self.conn.id(),
                    channel,
                };
                open.room.relay_awareness(key, &update, &payload);
            }
            Err(err) => {
                tracing::debug!(%channel, error = %err, "undecodable awareness update");
                self.close_channel(channel, ChannelCode::InvalidUpdate);
            }
        }
        None
    }

    /// The client sent CLOSE: answer it (unless it answers ours) and release the channel.
    fn on_client_close(&mut self, channel: ChannelId) -> Option<Ending> {
        if let Some(ChannelState::Open(open)) = self.channels.get(&channel) {
            if open.reassembler.in_progress() {
                // §7: only the rest of the message may follow its first fragment.
                return self.violation(
                    CloseCode::ProtocolError,
                    "CLOSE inside a fragmented message",
                );
            }
        }
        match self.channels.remove(&channel) {
            Some(ChannelState::Open(open)) => {
                self.release(channel, open);
                self.send_close(channel, ChannelCode::Normal);
            }
            Some(ChannelState::Closing) | None => {}
        }
        None
    }

    /// Server-initiated close of an open channel: tell the client, leave the room, and ignore
    /// the channel until the client's CLOSE arrives.
    fn close_channel(&mut self, channel: ChannelId, code: ChannelCode) {
        if let Some(ChannelState::Open(open)) = self.channels.remove(&channel) {
            self.release(channel, open);
            self.send_close(channel, code);
            self.channels.insert(channel, ChannelState::Closing);
        }
    }

    fn release(&self, channel: ChannelId, open: OpenChannel) {
        self.conn.channel_released(channel);
        open.room.unsubscribe(SubKey {
            conn: self.conn.id(),
            channel,
        });
        self.server.rooms.release(&open.room);
        self.server.metrics.channels.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends CLOSE on `channel`. Codes in the 44xx range are the client's errors and count
    /// against its budget; past it the connection is closed with 1008.
    fn send_close(&mut self, channel: ChannelId, code: ChannelCode) {
        self.server.metrics.count_channel_close(code.as_u16());
        let reason = code.description().to_owned();
        let close = Message::Close {
            code: code.as_u16(),
            reason,
        };
        self.conn.send(channel, &close);
        if (4400..4500).contains(&code.as_u16()) {
            self.channel_errors += 1;
            if self.channel_errors > MAX_CHANNEL_ERRORS {
                self.violation(CloseCode::PolicyViolation, "too many channel errors");
            }
        }
    }

    fn close_all_channels(&mut self) {
        for (channel, state) in std::mem::take(&mut self.channels) {
            if let ChannelState::Open(open) = state {
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
