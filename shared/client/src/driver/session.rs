//! One connection's life: HELLO / WELCOME, opening a channel per document, the y-protocols
//! exchange, live updates both ways, durable ACKs, awareness, the heartbeat watchdog. Ends on
//! a close, a lost socket, silence, or a shutdown request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::request::{Reply, ReplyBody, Request};
use quire_protocol::ysync::{
    decode_awareness, decode_sync, encode_step1, encode_step2, encode_update, SyncPayload,
};
use quire_protocol::{
    encode_fragmented, Access, ChannelCode, ChannelId, CloseCode, DocId, Frame, Heartbeat,
    HeartbeatConfig, HeartbeatEvent, Hello, Limits, Message, PayloadError, Reaction, Reassembler,
    PROTOCOL_REVISION,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{ReadTxn, Transact};

use super::{channel_reaction, Command, Driver, SessionEnd};
use crate::document::REMOTE_ORIGIN;
use crate::error::ClientError;
use crate::state::{ConnectionState, DocState};
use crate::store::LocalStore;
use crate::transport::{LastRead, Socket};

/// Outgoing messages waiting for the writer task.
const OUT_QUEUE: usize = 1024;
/// SYNC payloads at least this large (a whole document, reassembled from fragments) are
/// decoded on a blocking thread while the session keeps pinging (see `decode_keeping_alive`).
const LARGE_PAYLOAD: usize = 1 << 20;

/// A document channel on this connection.
#[derive(Debug)]
struct Chan {
    doc: DocId,
    /// The access granted by OPENED; writes are only sent on write channels.
    granted: Option<Access>,
    opened: bool,
    /// We sent CLOSE and wait for the answer.
    closing: bool,
    synced: bool,
    /// We answered the server's step 1 with our step 2. Until then local edits are not sent
    /// on their own: the step 2 carries them, and an update sent before it could start past
    /// what the server holds (PROTOCOL.md §6.4), which the server refuses.
    answered: bool,
    /// Writes sent on this channel (the server numbers them the same way).
    seq: u64,
    /// (write number, highest local-store ID that write carries), in order.
    watermarks: VecDeque<(u64, i64)>,
    reassembler: Reassembler,
}

/// A request waiting for its reply: where it was asked, which operation (to read the
/// reply), and who waits.
struct PendingRequest {
    channel: ChannelId,
    op: u8,
    reply: oneshot::Sender<Result<ReplyBody, ClientError>>,
}

struct Session {
    out: mpsc::Sender<WsMessage>,
    /// Requests sent and not yet answered, by request ID. Dropped (the waiter sees
    /// [`ClientError::Offline`]) when their channel or the connection ends.
    requests: HashMap<u32, PendingRequest>,
    next_request: u32,
    channels: HashMap<ChannelId, Chan>,
    by_doc: HashMap<DocId, ChannelId>,
    next_channel: u32,
    limits: Limits,
    welcomed_at: Option<Instant>,
    heartbeat: Heartbeat,
}

impl Session {
    async fn send(&self, channel: ChannelId, message: Message) {
        let mut frames = Vec::with_capacity(1);
        encode_fragmented(channel, &message, self.limits.max_frame_size, |frame| {
            frames.push(frame)
        });
        for frame in frames {
            let _ = self.out.send(WsMessage::Binary(frame.into())).await;
        }
    }

    /// CLOSE with 1000: the client is done with the channel, or answers the server's CLOSE.
    async fn close_channel(&self, channel: ChannelId) {
        let close = Message::Close {
            code: ChannelCode::Normal.as_u16(),
            reason: String::new(),
        };
        self.send(channel, close).await;
    }

    /// Sends the Close frame for `code`, with its §10.1 reason text.
    async fn close_socket(&self, code: CloseCode) {
        let frame = CloseFrame {
            code: WsCode::from(code.as_u16()),
            reason: code.description().into(),
        };
        let _ = self.out.send(WsMessage::Close(Some(frame))).await;
    }
}

fn end(
    code: CloseCode,
    reason: impl Into<String>,
    session: &Session,
    requested: bool,
) -> SessionEnd {
    SessionEnd {
        code,
        reason: reason.into(),
        uptime: session.welcomed_at.map(|t| t.elapsed()),
        requested,
    }
}

impl<S: LocalStore> Driver<S> {
    pub(crate) async fn session(&mut self, socket: Socket, last_read: LastRead) -> SessionEnd {
        let (mut sink, mut stream) = socket.split();
        let (out, mut out_rx) = mpsc::channel::<WsMessage>(OUT_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let closing = matches!(message, WsMessage::Close(_));
                if sink.feed(message).await.is_err() {
                    return;
                }
                while let Ok(message) = out_rx.try_recv() {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let mut s = Session {
            out,
            requests: HashMap::new(),
            next_request: 1,
            channels: HashMap::new(),
            by_doc: HashMap::new(),
            next_channel: 1,
            limits: Limits::default(),
            welcomed_at: None,
            heartbeat: Heartbeat::new(Instant::now(), HeartbeatConfig::DEFAULT),
        };
        let hello = Hello {
            revision: PROTOCOL_REVISION,
            client: self.config.client_name.clone(),
        };
        s.send(ChannelId::CONTROL, Message::Hello(hello)).await;

        let ending = loop {
            let reopen = self.docs.values().filter_map(|d| d.reopen_at).min();
            let wake = reopen.map_or(s.heartbeat.poll_timeout(), |r| {
                r.min(s.heartbeat.poll_timeout())
            });
            tokio::select! {
                message = stream.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(err)) => break end(CloseCode::Abnormal, format!("connection lost: {err}"), &s, false),
                        None => break end(CloseCode::Abnormal, "connection lost", &s, false),
                    };
                    s.heartbeat.on_traffic(Instant::now());
                    match message {
                        WsMessage::Binary(bytes) => {
                            let receive_limits = Limits { max_frame_size: u32::MAX, ..s.limits };
                            match Frame::decode(&bytes, &receive_limits) {
                                Ok(frame) => {
                                    if let Some(ending) = self.on_frame(&mut s, frame).await {
                                        break ending;
                                    }
                                }
                                Err(err) => {
                                    let code = err.close_code();
                                    s.close_socket(code).await;
                                    break end(code, format!("bad frame from the server: {err}"), &s, false);
                                }
                            }
                        }
                        WsMessage::Close(frame) => {
                            let (code, reason) = frame.map_or((CloseCode::Other(1005), String::new()), |f| (CloseCode::from_u16(f.code.into()), f.reason.to_string()));
                            break end(code, reason, &s, false);
                        }
                        WsMessage::Text(_) => {
                            s.close_socket(CloseCode::UnsupportedData).await;
                            break end(CloseCode::UnsupportedData, "the server sent a text frame", &s, false);
                        }
                        _ => {}
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        s.close_socket(CloseCode::Normal).await;
                        break end(CloseCode::Normal, "client dropped", &s, true);
                    };
                    if let Some(ending) = self.on_command(&mut s, command).await {
                        break ending;
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    s.heartbeat.on_traffic(last_read.get());
                    match s.heartbeat.handle_timeout(Instant::now()) {
                        Some(HeartbeatEvent::SendPing(nonce)) if s.welcomed_at.is_some() => {
                            s.send(ChannelId::CONTROL, Message::Ping(nonce)).await;
                        }
                        Some(HeartbeatEvent::Expired) => {
                            break end(CloseCode::HeartbeatTimeout, "no traffic from the server within the heartbeat timeout", &s, false);
                        }
                        _ => {}
                    }
                    if s.welcomed_at.is_some() {
                        self.reopen_due(&mut s).await;
                    }
                }
            }
        };
        drop(s);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
        ending
    }

    async fn on_frame(&mut self, s: &mut Session, frame: Frame) -> Option<SessionEnd> {
        let channel = frame.channel;
        match frame.message {
            Message::Welcome(welcome) => {
                let now = Instant::now();
                s.limits = welcome.limits;
                s.heartbeat.reconfigure(
                    now,
                    HeartbeatConfig {
                        interval: std::time::Duration::from_millis(
                            welcome.heartbeat_interval_ms.into(),
                        ),
                        timeout: std::time::Duration::from_millis(
                            welcome.heartbeat_timeout_ms.into(),
                        ),
                    },
                );
                s.welcomed_at = Some(now);
                self.publish(ConnectionState::Connected { rtt: None });
                let docs: Vec<DocId> = self
                    .docs
                    .iter()
                    .filter(|(_, e)| !e.failed)
                    .map(|(d, _)| d.clone())
                    .collect();
                for doc in docs {
                    self.open_channel(s, doc).await;
                }
            }
            Message::Ping(nonce) => s.send(ChannelId::CONTROL, Message::Pong(nonce)).await,
            Message::Pong(nonce) => {
                if let Some(rtt) = s.heartbeat.on_pong(Instant::now(), nonce) {
                    self.publish(ConnectionState::Connected { rtt: Some(rtt) });
                }
            }
            Message::Opened { access } => self.on_opened(s, channel, access).await,
            Message::Close { code, reason } => {
                self.on_channel_close(s, channel, code, reason).await
            }
            Message::Reply(body) if channel.is_control() => on_reply(s, &body),
            message @ (Message::Sync(_)
            | Message::Awareness(_)
            | Message::Fragment(_)
            | Message::Reply(_)) => {
                let chan = s.channels.get_mut(&channel)?;
                if chan.closing {
                    return None;
                }
                let max = s.limits.max_message_size;
                match chan.reassembler.push(message, max) {
                    Ok(Some(Message::Sync(payload))) => self.on_sync(s, channel, payload).await,
                    Ok(Some(Message::Awareness(payload))) => {
                        self.on_awareness(s, channel, &payload)
                    }
                    Ok(Some(Message::Reply(body))) => on_reply(s, &body),
                    Ok(_) => {
                        let received = chan.reassembler.buffered();
                        if let Some(entry) = self.docs.get(&chan.doc) {
                            entry
                                .shared
                                .state
                                .send_replace(DocState::Syncing { received });
                        }
                    }
                    Err(err) => {
                        let code = err.close_code();
                        s.close_socket(code).await;
                        return Some(end(code, err.to_string(), s, false));
                    }
                }
            }
            Message::Ack(seq) => self.on_ack(s, channel, seq).await,
            Message::Hello(_) | Message::Open { .. } | Message::Request(_) => {
                s.close_socket(CloseCode::ProtocolError).await;
                return Some(end(
                    CloseCode::ProtocolError,
                    "client-only message from the server",
                    s,
                    false,
                ));
            }
        }
        None
    }

    async fn open_channel(&mut self, s: &mut Session, doc: DocId) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        entry.reopen_at = None;
        let channel = ChannelId(s.next_channel);
        s.next_channel += 1;
        s.channels.insert(
            channel,
            Chan {
                doc: doc.clone(),
                granted: None,
                opened: false,
                closing: false,
                synced: false,
                answered: false,
                seq: 0,
                watermarks: VecDeque::new(),
                reassembler: Reassembler::default(),
            },
        );
        s.by_doc.insert(doc.clone(), channel);
        entry
            .shared
            .state
            .send_replace(DocState::Syncing { received: 0 });
        s.send(
            channel,
            Message::Open {
                access: entry.shared.access,
                doc,
            },
        )
        .await;
    }

    async fn reopen_due(&mut self, s: &mut Session) {
        let now = Instant::now();
        let due: Vec<DocId> = self
            .docs
            .iter()
            .filter(|(doc, e)| {
                e.reopen_at.is_some_and(|t| t <= now) && !s.by_doc.contains_key(*doc)
            })
            .map(|(doc, _)| doc.clone())
            .collect();
        for doc in due {
            self.open_channel(s, doc).await;
        }
    }

    async fn on_opened(&mut self, s: &mut Session, channel: ChannelId, access: Access) {
        let Some(chan) = s.channels.get_mut(&channel) else {
            return;
        };
        chan.opened = true;
        chan.granted = Some(access);
        let Some(entry) = self.docs.get_mut(&chan.doc) else {
            return;
        };
        entry.opened_at = Some(Instant::now());
        entry.shared.granted.send_replace(Some(access));
        let step1 = encode_step1(&entry.shared.doc.transact().state_vector());
        let awareness = entry.shared.present_awareness();
        s.send(channel, Message::Sync(step1)).await;
        if let Some(awareness) = awareness {
            s.send(channel, Message::Awareness(awareness)).await;
        }
    }

    async fn on_channel_close(
        &mut self,
        s: &mut Session,
        channel: ChannelId,
        code: u16,
        reason: String,
    ) {
        let Some(chan) = s.channels.remove(&channel) else {
            return;
        };
        s.by_doc.remove(&chan.doc);
        // No reply comes on a closed channel: whoever waits hears that it is gone.
        s.requests.retain(|_, pending| pending.channel != channel);
        if chan.closing {
            return;
        }
        if chan.opened {
            // Answer the server's close; a refusal of OPEN needs no answer.
            s.close_channel(channel).await;
        }
        let Some(entry) = self.docs.get_mut(&chan.doc) else {
            return;
        };
        entry.shared.granted.send_replace(None);
        match channel_reaction(code) {
            Reaction::DoNotReopen | Reaction::Stop => {
                tracing::warn!(doc = %chan.doc, code, %reason, "the server closed the document");
                entry.failed = true;
                entry
                    .shared
                    .state
                    .send_replace(DocState::Failed { code, reason });
            }
            reaction => {
                let stable = self.config.backoff.stable_after;
                if entry
                    .opened_at
                    .take()
                    .is_some_and(|at| at.elapsed() >= stable)
                {
                    entry.reopen_attempt = 0;
                }
                let delay =
                    self.config
                        .backoff
                        .delay_for(reaction, entry.reopen_attempt, rand::random());
                entry.reopen_attempt += 1;
                entry.reopen_at = Some(Instant::now() + delay.unwrap_or(self.config.backoff.cap));
                entry.shared.state.send_replace(DocState::Offline {
                    pending: entry.pending.len(),
                });
            }
        }
    }

    async fn on_sync(&mut self, s: &mut Session, channel: ChannelId, payload: Vec<u8>) {
        if !s.channels.contains_key(&channel) {
            return;
        }
        let (payload, decoded) = decode_keeping_alive(s, payload).await;
        let Some(chan) = s.channels.get_mut(&channel) else {
            return;
        };
        let doc = chan.doc.clone();
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        match decoded {
            Ok(SyncPayload::Step1(remote)) => {
                let diff = entry
                    .shared
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&remote);
                chan.seq += 1;
                chan.watermarks
                    .push_back((chan.seq, entry.pending.back().copied().unwrap_or(0)));
                chan.answered = true;
                s.send(channel, Message::Sync(encode_step2(diff))).await;
            }
            Ok(SyncPayload::Step2(update)) | Ok(SyncPayload::Update(update)) => {
                let is_step2 = payload.first() == Some(&(quire_protocol::ysync::SYNC_STEP_2 as u8));
                if let Err(err) = entry
                    .shared
                    .doc
                    .transact_mut_with(REMOTE_ORIGIN)
                    .apply_update(update)
                {
                    tracing::warn!(doc = %doc, error = %err, "server update did not apply");
                }
                if is_step2 {
                    chan.synced = true;
                }
                let synced = chan.synced;
                let raw = raw_update(&payload).to_vec();
                let pending = entry.pending.len();
                if synced {
                    entry
                        .shared
                        .state
                        .send_replace(DocState::Synced { pending });
                }
                self.store_remote(&doc, &raw).await;
            }
            Err(err) => {
                tracing::warn!(doc = %doc, error = %err, "undecodable sync message from the server");
            }
        }
    }

    fn on_awareness(&mut self, s: &mut Session, channel: ChannelId, payload: &[u8]) {
        let Some(chan) = s.channels.get(&channel) else {
            return;
        };
        let Some(entry) = self.docs.get(&chan.doc) else {
            return;
        };
        let Ok(update) = decode_awareness(payload) else {
            return;
        };
        let own = entry.shared.doc.client_id().get();
        entry
            .shared
            .others
            .send_modify(|others: &mut BTreeMap<u64, String>| {
                for (client, state) in &update.clients {
                    let client = client.get();
                    if client == own {
                        continue;
                    }
                    if &*state.json == "null" {
                        others.remove(&client);
                    } else {
                        others.insert(client, state.json.to_string());
                    }
                }
            });
    }

    async fn on_ack(&mut self, s: &mut Session, channel: ChannelId, seq: u64) {
        let Some(chan) = s.channels.get_mut(&channel) else {
            return;
        };
        let mut through = None;
        while chan.watermarks.front().is_some_and(|(n, _)| *n <= seq) {
            through = chan.watermarks.pop_front().map(|(_, id)| id).max(through);
        }
        let doc = chan.doc.clone();
        let synced = chan.synced;
        if let Some(through) = through {
            self.acknowledge(&doc, through).await;
        }
        if let Some(entry) = self.docs.get(&doc) {
            if synced {
                entry.shared.state.send_replace(DocState::Synced {
                    pending: entry.pending.len(),
                });
            }
        }
    }

    async fn on_command(&mut self, s: &mut Session, command: Command) -> Option<SessionEnd> {
        match command {
            Command::Open { doc, access, reply } => {
                let result = self.load(doc.clone(), access).await;
                let fresh = result.is_ok() && !s.by_doc.contains_key(&doc);
                let _ = reply.send(result);
                if fresh && s.welcomed_at.is_some() {
                    self.open_channel(s, doc).await;
                }
            }
            Command::Close { doc, done } => {
                if let Some(channel) = s.by_doc.remove(&doc) {
                    if let Some(chan) = s.channels.get_mut(&channel) {
                        chan.closing = true;
                    }
                    if let Some(entry) = self.docs.get(&doc) {
                        if let Some(removal) = entry.shared.clear_awareness() {
                            s.send(channel, Message::Awareness(removal)).await;
                        }
                    }
                    s.close_channel(channel).await;
                }
                self.docs.remove(&doc);
                let _ = done.send(());
            }
            Command::LocalUpdate { doc, update } => {
                let ids = self.store_local(vec![(doc.clone(), update.clone())]).await;
                let channel = s.by_doc.get(&doc).copied()?;
                let chan = s.channels.get_mut(&channel)?;
                // On a read-only channel local edits stay local (and pending): the server
                // would refuse them and close the channel.
                if chan.answered && !chan.closing && chan.granted == Some(Access::Write) {
                    chan.seq += 1;
                    let id = ids.first().copied().flatten().unwrap_or(0);
                    chan.watermarks.push_back((chan.seq, id));
                    let synced = chan.synced;
                    s.send(channel, Message::Sync(encode_update(update))).await;
                    if let (true, Some(entry)) = (synced, self.docs.get(&doc)) {
                        entry.shared.state.send_replace(DocState::Synced {
                            pending: entry.pending.len(),
                        });
                    }
                }
            }
            Command::Awareness { doc } => {
                let channel = s.by_doc.get(&doc).copied()?;
                let opened = s
                    .channels
                    .get(&channel)
                    .is_some_and(|c| c.opened && !c.closing);
                if let (true, Some(entry)) = (opened, self.docs.get(&doc)) {
                    s.send(channel, Message::Awareness(entry.shared.awareness_update()))
                        .await;
                }
            }
            Command::Request { doc, op, reply } => {
                if s.welcomed_at.is_none() {
                    let _ = reply.send(Err(ClientError::Offline));
                    return None;
                }
                let channel = match doc {
                    None => ChannelId::CONTROL,
                    Some(doc) => {
                        let open = s.by_doc.get(&doc).copied().filter(|channel| {
                            s.channels
                                .get(channel)
                                .is_some_and(|c| c.opened && !c.closing)
                        });
                        match open {
                            Some(channel) => channel,
                            None => {
                                let _ = reply.send(Err(ClientError::NotOpen));
                                return None;
                            }
                        }
                    }
                };
                let id = s.next_request;
                s.next_request = s.next_request.wrapping_add(1).max(1);
                let code = op.code();
                s.send(channel, Message::Request(Request::new(id, op).encode()))
                    .await;
                s.requests.insert(
                    id,
                    PendingRequest {
                        channel,
                        op: code,
                        reply,
                    },
                );
            }
            Command::SetToken(token) => self.config.token = token,
            Command::SetTrust(trust) => self.config.trust = trust,
            Command::Shutdown { code, done } => {
                s.close_socket(code).await;
                self.shutdown = Some((code, done));
                return Some(end(code, "closed by the client", s, true));
            }
        }
        None
    }
}

/// Hands a reply to whoever waits for it.
fn on_reply(s: &mut Session, body: &[u8]) {
    let Ok(id) = Reply::peek_id(body) else {
        tracing::warn!("a reply without a request ID");
        return;
    };
    let Some(pending) = s.requests.remove(&id) else {
        tracing::debug!(id, "a reply to no request of ours");
        return;
    };
    let result = match Reply::decode(body, pending.op) {
        Ok(Reply {
            outcome: Ok(body), ..
        }) => Ok(body),
        Ok(Reply {
            outcome: Err((code, reason)),
            ..
        }) => Err(ClientError::RequestRefused { code, reason }),
        Err(err) => Err(ClientError::BadReply(err.to_string())),
    };
    let _ = pending.reply.send(result);
}

/// Decodes a SYNC payload. Validating and decoding a whole large document takes long (seconds
/// for 50 MB in a debug build), so a large payload is decoded on a blocking thread while this
/// session keeps sending its pings: otherwise a client busy with a big sync goes silent and
/// the server closes it with 4008, and the blocked worker thread stalls other tasks too.
async fn decode_keeping_alive(
    s: &mut Session,
    payload: Vec<u8>,
) -> (Vec<u8>, Result<SyncPayload, PayloadError>) {
    if payload.len() < LARGE_PAYLOAD {
        let decoded = decode_sync(&payload);
        return (payload, decoded);
    }
    let mut work = tokio::task::spawn_blocking(move || {
        let decoded = decode_sync(&payload);
        (payload, decoded)
    });
    let done = loop {
        let wake = tokio::time::Instant::from_std(s.heartbeat.poll_timeout());
        tokio::select! {
            done = &mut work => break done,
            _ = tokio::time::sleep_until(wake) => {
                // The socket is not read meanwhile, so the server's silence proves nothing.
                let now = Instant::now();
                s.heartbeat.on_traffic(now);
                if let Some(HeartbeatEvent::SendPing(nonce)) = s.heartbeat.handle_timeout(now) {
                    s.send(ChannelId::CONTROL, Message::Ping(nonce)).await;
                }
            }
        }
    };
    // The server's frames waited in the socket while we were busy: judge it from now on.
    s.heartbeat.on_traffic(Instant::now());
    done.unwrap_or_else(|_| (Vec::new(), Err(PayloadError::DecoderPanicked)))
}

/// The v1 update inside a step 2 or update payload (after the tag and the length).
fn raw_update(payload: &[u8]) -> &[u8] {
    let mut reader = quire_protocol::varint::Reader::new(payload);
    let _ = reader.read_varint();
    let _ = reader.read_varint();
    reader.rest()
}
