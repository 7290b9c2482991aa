//! The pair harness: a client session and server sessions joined by an in-memory link, in
//! simulated time. The link can delay, drop one direction, go half-open (nothing arrives and
//! nobody is told) or be cut (both ends see the socket end, frames in flight are lost, as a
//! cut in the middle of a frame would lose them). Each end's application is played here with
//! real yrs documents: the server keeps one document per ID across connections (its "store")
//! and relays writes to the other subscribers; the client keeps its replica and a list of local
//! edits not yet acknowledged, as the real client's store does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use quire_protocol::request::{Reply, ReplyBody, RequestOp};
use quire_protocol::session::{
    ClientConfig, ClientEvent, ClientSession, ServerConfig, ServerOutput, ServerSession, Status,
    Transmit,
};
use quire_protocol::yrs::{Doc, GetString, ReadTxn, Text, Transact};
use quire_protocol::ysync::{decode_sync, encode_step1, encode_step2, encode_update, SyncPayload};
use quire_protocol::{
    Access, BackoffPolicy, ChannelCode, ChannelId, CloseCode, DocId, Frame, HeartbeatConfig,
    Limits, Message, Reaction,
};

/// What crosses the link in one direction.
#[derive(Debug, Clone)]
pub(crate) enum Packet {
    Frame(Vec<u8>),
    Close(CloseCode),
}

/// One direction of the link.
#[derive(Debug, Default)]
struct Pipe {
    queue: VecDeque<(Instant, Packet)>,
    /// Everything sent this way is lost.
    dropping: bool,
    bytes: usize,
}

/// How the server's application answers an OPEN.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpenPolicy {
    Accept(Access),
    Refuse(ChannelCode),
}

/// The server's application: its documents and who is subscribed, across connections.
#[derive(Default)]
pub(crate) struct ServerWorld {
    pub(crate) docs: HashMap<DocId, Doc>,
    /// Per document: (connection number, channel, generation) subscribed.
    subs: HashMap<DocId, Vec<(usize, ChannelId, u64)>>,
    pub(crate) policies: HashMap<DocId, OpenPolicy>,
    /// Writes applied, per document (to check nothing is applied twice).
    pub(crate) writes: HashMap<DocId, usize>,
    /// Requests received (channel, op code).
    pub(crate) requests: Vec<(ChannelId, u8)>,
}

impl ServerWorld {
    pub(crate) fn text(&self, doc: &str) -> String {
        self.docs
            .get(&DocId::parse(doc, 256).unwrap())
            .map(text_of)
            .unwrap_or_default()
    }
}

pub(crate) struct ServerEnd {
    pub(crate) session: ServerSession<DocId>,
    /// Connection number in the world.
    pub(crate) number: usize,
    /// The code the server closed this connection with, once it did.
    pub(crate) closed_with: Option<CloseCode>,
}

pub(crate) struct Pair {
    pub(crate) t0: Instant,
    pub(crate) now: Instant,
    pub(crate) latency: Duration,
    to_server: Pipe,
    to_client: Pipe,
    pub(crate) half_open: bool,
    /// Refuse new sockets (the server is down).
    pub(crate) server_down: bool,
    pub(crate) client: ClientSession,
    pub(crate) server: Option<ServerEnd>,
    pub(crate) world: ServerWorld,
    pub(crate) server_config: ServerConfig,
    connections: usize,
    /// A socket being opened: it is up at this instant.
    connecting_at: Option<Instant>,
    /// The client application's replicas.
    pub(crate) replicas: BTreeMap<DocId, Doc>,
    /// Local edits not yet acknowledged: (ID, update), per document.
    pub(crate) pending: BTreeMap<DocId, Vec<(i64, Vec<u8>)>>,
    next_local_id: i64,
    /// Everything the client application was told, with when.
    pub(crate) events: Vec<(Duration, ClientEvent)>,
    /// Close codes the server ended connections with, in order.
    pub(crate) server_closes: Vec<CloseCode>,
    /// Channel CLOSE codes the server sent, in order.
    pub(crate) channel_closes: Vec<(ChannelId, u16)>,
    /// Don't answer the client's step 1 automatically (the server application is slow).
    pub(crate) hold_step1: bool,
}

pub(crate) fn doc(name: &str) -> DocId {
    DocId::parse(name, 256).unwrap()
}

pub(crate) fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text("content");
    let txn = doc.transact();
    text.get_string(&txn)
}

pub(crate) fn server_config() -> ServerConfig {
    ServerConfig {
        conn_id: 1,
        heartbeat: HeartbeatConfig::DEFAULT,
        limits: Limits::default(),
        fragment_timeout: Duration::from_secs(120),
        token_expires: None,
    }
}

impl Pair {
    /// A client (online) and a server that accepts every socket, nothing delayed.
    pub(crate) fn new() -> Self {
        Self::with(Duration::from_millis(5), 7)
    }

    pub(crate) fn with(latency: Duration, seed: u64) -> Self {
        let t0 = Instant::now();
        let client = ClientSession::new(
            t0,
            ClientConfig {
                client_name: "pair-test".into(),
                backoff: BackoffPolicy::DEFAULT,
                seed,
            },
            true,
        );
        let mut pair = Self {
            t0,
            now: t0,
            latency,
            to_server: Pipe::default(),
            to_client: Pipe::default(),
            half_open: false,
            server_down: false,
            client,
            server: None,
            world: ServerWorld::default(),
            server_config: server_config(),
            connections: 0,
            connecting_at: None,
            replicas: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_local_id: 1,
            events: Vec::new(),
            server_closes: Vec::new(),
            channel_closes: Vec::new(),
            hold_step1: false,
        };
        pair.pump();
        pair
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The client application opens `name` (a fresh replica, or the one it has).
    pub(crate) fn open(&mut self, name: &str, access: Access) {
        let id = doc(name);
        self.replicas.entry(id.clone()).or_default();
        self.client.open_doc(id, access);
        self.pump();
    }

    /// The client application types `text` at the end of `name`.
    pub(crate) fn type_text(&mut self, name: &str, text: &str) {
        let id = doc(name);
        let replica = self.replicas.entry(id.clone()).or_default();
        let content = replica.get_or_insert_text("content");
        let update = {
            let mut txn = replica.transact_mut();
            let len = content.len(&txn);
            content.insert(&mut txn, len, text);
            txn.encode_update_v1()
        };
        let local = self.next_local_id;
        self.next_local_id += 1;
        self.pending
            .entry(id.clone())
            .or_default()
            .push((local, update.clone()));
        self.client.local_update(&id, encode_update(update), local);
        self.pump();
    }

    pub(crate) fn pending_count(&self, name: &str) -> usize {
        self.pending.get(&doc(name)).map_or(0, Vec::len)
    }

    pub(crate) fn client_text(&self, name: &str) -> String {
        self.replicas
            .get(&doc(name))
            .map(text_of)
            .unwrap_or_default()
    }

    /// Both ends see the socket end; whatever was in flight is lost.
    pub(crate) fn cut(&mut self) {
        self.to_server.queue.clear();
        self.to_client.queue.clear();
        if let Some(mut end) = self.server.take() {
            end.session.release_all();
            self.drain_server(&mut end);
        }
        let now = self.now;
        self.client
            .socket_closed(now, CloseCode::Abnormal, "connection lost");
        self.pump();
    }

    /// Frames sent from now on in that direction are lost, and nobody is told.
    pub(crate) fn drop_to_server(&mut self, on: bool) {
        self.to_server.dropping = on;
    }

    /// Bytes that crossed the link towards the server since the last call.
    pub(crate) fn take_bytes_to_server(&mut self) -> usize {
        std::mem::take(&mut self.to_server.bytes)
    }

    pub(crate) fn take_bytes_to_client(&mut self) -> usize {
        std::mem::take(&mut self.to_client.bytes)
    }

    /// Puts raw frame bytes on the wire to the server (a hand-written client).
    pub(crate) fn inject_to_server(&mut self, bytes: Vec<u8>) {
        let at = self.now + self.latency;
        self.to_server.queue.push_back((at, Packet::Frame(bytes)));
    }

    /// The server application closes every channel on `name` with `code`.
    pub(crate) fn server_close_doc(&mut self, name: &str, code: ChannelCode) {
        let id = doc(name);
        let subs = self.world.subs.remove(&id).unwrap_or_default();
        if let Some(mut end) = self.server.take() {
            for (conn, channel, generation) in subs {
                if conn == end.number {
                    end.session.room_closed(channel, generation, code);
                }
            }
            self.drain_server(&mut end);
            self.server = Some(end);
        }
        self.pump();
    }

    /// The server ends the connection with `code` (a shutdown, a token revoked…).
    pub(crate) fn server_close_connection(&mut self, code: CloseCode) {
        if let Some(mut end) = self.server.take() {
            end.session.release_all();
            self.drain_server(&mut end);
            self.send_to_client(Packet::Close(code));
            self.server_closes.push(code);
        }
        self.pump();
    }

    /// Runs everything due up to `now + d`, stepping from deadline to deadline.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        let mut same_instant = 0;
        loop {
            self.pump();
            let next = [
                self.client.poll_timeout(),
                self.server.as_ref().and_then(|s| s.session.poll_timeout()),
                self.to_server.queue.front().map(|(at, _)| *at),
                self.to_client.queue.front().map(|(at, _)| *at),
                self.connecting_at,
            ]
            .into_iter()
            .flatten()
            .filter(|at| *at <= end)
            .min();
            let Some(next) = next else { break };
            // A deadline that never moves on would spin here for ever: fail instead.
            same_instant = if next <= self.now {
                same_instant + 1
            } else {
                0
            };
            assert!(
                same_instant < 10_000,
                "a deadline at {next:?} is never served"
            );
            self.now = self.now.max(next);
            self.step();
        }
        self.now = end;
        self.pump();
    }

    /// Runs until `done` holds or `limit` of simulated time passes; returns whether it held.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Pair) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.advance(Duration::from_millis(1).max(self.latency / 2));
        }
        done(self)
    }

    fn step(&mut self) {
        let now = self.now;
        if self.connecting_at.is_some_and(|at| at <= now) {
            self.connecting_at = None;
            self.open_socket();
        }
        self.client.handle_timeout(now);
        if let Some(mut end) = self.server.take() {
            end.session.handle_timeout(now);
            self.drain_server(&mut end);
            self.server = Some(end);
        }
        while self
            .to_server
            .queue
            .front()
            .is_some_and(|(at, _)| *at <= now)
        {
            let (_, packet) = self.to_server.queue.pop_front().unwrap();
            self.deliver_to_server(packet);
        }
        while self
            .to_client
            .queue
            .front()
            .is_some_and(|(at, _)| *at <= now)
        {
            let (_, packet) = self.to_client.queue.pop_front().unwrap();
            match packet {
                Packet::Frame(bytes) => self.client.handle_frame(now, &bytes),
                Packet::Close(code) => self.client.socket_closed(now, code, code.description()),
            }
            self.pump();
        }
    }

    fn open_socket(&mut self) {
        if self.server_down {
            self.client
                .connect_failed(self.now, Reaction::RetryWithBackoff, "connection refused");
            return;
        }
        self.connections += 1;
        let mut config = self.server_config.clone();
        config.conn_id = self.connections as u64;
        self.server = Some(ServerEnd {
            session: ServerSession::new(self.now, config),
            number: self.connections,
            closed_with: None,
        });
        self.to_server.queue.clear();
        self.to_client.queue.clear();
        self.client.connected(self.now);
    }

    fn deliver_to_server(&mut self, packet: Packet) {
        let now = self.now;
        let Some(mut end) = self.server.take() else {
            return;
        };
        match packet {
            Packet::Frame(bytes) => end.session.handle_frame(now, &bytes),
            Packet::Close(code) => {
                // The client closed the socket: echo its Close, as the WebSocket layer does.
                end.session.release_all();
                self.drain_server(&mut end);
                let _ = code;
                return;
            }
        }
        self.drain_server(&mut end);
        if end.closed_with.is_none() {
            self.server = Some(end);
        }
    }

    /// Carries out the server session's outputs as the server's application would.
    fn drain_server(&mut self, end: &mut ServerEnd) {
        while let Some(output) = end.session.poll_output() {
            match output {
                ServerOutput::Control(message) => {
                    self.send_frame_to_client(ChannelId::CONTROL, message)
                }
                ServerOutput::CloseChannel { channel, code } => {
                    self.channel_closes.push((channel, code.as_u16()));
                    self.send_frame_to_client(
                        channel,
                        Message::Close {
                            code: code.as_u16(),
                            reason: code.description().into(),
                        },
                    );
                }
                ServerOutput::Send {
                    channel, message, ..
                } => self.send_frame_to_client(channel, message),
                ServerOutput::Open {
                    channel,
                    doc,
                    requested,
                } => {
                    let policy = self
                        .world
                        .policies
                        .get(&doc)
                        .copied()
                        .unwrap_or(OpenPolicy::Accept(Access::Write));
                    match policy {
                        OpenPolicy::Refuse(code) => end.session.refuse_open(channel, code),
                        OpenPolicy::Accept(allowed) => {
                            let access = Access::granted(requested, allowed);
                            let Ok(generation) =
                                end.session.accept_open(channel, access, doc.clone())
                            else {
                                continue;
                            };
                            self.world
                                .subs
                                .entry(doc.clone())
                                .or_default()
                                .push((end.number, channel, generation));
                            let stored = self.world.docs.entry(doc).or_default();
                            let step1 = encode_step1(&stored.transact().state_vector());
                            self.send_frame_to_client(channel, Message::Opened { access });
                            // §6.7: no step 1 on a read-only channel, nothing to answer.
                            if access.can_write() {
                                self.send_frame_to_client(channel, Message::Sync(step1));
                            }
                        }
                    }
                }
                ServerOutput::Sync {
                    channel,
                    generation,
                    room,
                    seq,
                    payload,
                } => self.server_sync(end, channel, generation, room, seq, payload),
                ServerOutput::Awareness { .. } => {}
                ServerOutput::Request {
                    channel, request, ..
                } => {
                    self.world.requests.push((channel, request.op.code()));
                    let body = match request.op {
                        RequestOp::ListTrash => ReplyBody::Trash(Vec::new()),
                        _ => ReplyBody::Done,
                    };
                    let reply = Reply::ok(request.id, body);
                    self.send_frame_to_client(channel, Message::Reply(reply.encode()));
                }
                ServerOutput::CloseAfterWrites {
                    channel,
                    generation,
                    ..
                } => {
                    // Writes are applied as they arrive here: nothing to wait for.
                    end.session.drained(channel, generation);
                }
                ServerOutput::Release { channel, room } => {
                    if let Some(subs) = self.world.subs.get_mut(&room) {
                        subs.retain(|(conn, ch, _)| !(*conn == end.number && *ch == channel));
                    }
                }
                ServerOutput::Unfinished(_) => {}
                ServerOutput::CloseConnection { code, .. } => {
                    end.closed_with = Some(code);
                    self.server_closes.push(code);
                    end.session.release_all();
                    self.send_to_client(Packet::Close(code));
                }
            }
        }
    }

    fn server_sync(
        &mut self,
        end: &mut ServerEnd,
        channel: ChannelId,
        generation: u64,
        room: DocId,
        seq: u64,
        payload: Vec<u8>,
    ) {
        let stored = self.world.docs.entry(room.clone()).or_default();
        match decode_sync(&payload) {
            Ok(SyncPayload::Step1(remote)) => {
                if self.hold_step1 {
                    return;
                }
                let diff = stored.transact().encode_state_as_update_v1(&remote);
                self.send_frame_to_client(channel, Message::Sync(encode_step2(diff)));
            }
            Ok(SyncPayload::Step2(update) | SyncPayload::Update(update)) => {
                let before = stored.transact().state_vector();
                stored.transact_mut().apply_update(update).unwrap();
                let diff = stored.transact().encode_state_as_update_v1(&before);
                *self.world.writes.entry(room.clone()).or_default() += 1;
                self.send_frame_to_client(channel, Message::Ack(seq));
                let others: Vec<_> = self.world.subs[&room]
                    .iter()
                    .filter(|(c, ch, g)| *c == end.number && (*ch, *g) != (channel, generation))
                    .map(|(_, ch, _)| *ch)
                    .collect();
                for other in others {
                    self.send_frame_to_client(other, Message::Sync(encode_update(diff.clone())));
                }
            }
            Err(_) => end
                .session
                .room_closed(channel, generation, ChannelCode::InvalidUpdate),
        }
    }

    fn send_frame_to_client(&mut self, channel: ChannelId, message: Message) {
        let max = self.server_config.limits.max_frame_size;
        let mut frames = Vec::new();
        quire_protocol::encode_fragmented(channel, &message, max, |f| frames.push(f));
        for frame in frames {
            self.send_to_client(Packet::Frame(frame));
        }
    }

    fn send_to_client(&mut self, packet: Packet) {
        if self.to_client.dropping || self.half_open {
            return;
        }
        if let Packet::Frame(bytes) = &packet {
            self.to_client.bytes += bytes.len();
        }
        let at = self.now + self.latency;
        self.to_client.queue.push_back((at, packet));
    }

    /// Carries out the client session's transmits and events, as the client's driver and
    /// application would, until both are empty.
    pub(crate) fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(transmit) = self.client.poll_transmit() {
                busy = true;
                match transmit {
                    Transmit::Frame(bytes) => {
                        if self.to_server.dropping || self.half_open {
                            continue;
                        }
                        self.to_server.bytes += bytes.len();
                        let at = self.now + self.latency;
                        self.to_server.queue.push_back((at, Packet::Frame(bytes)));
                    }
                    Transmit::Close(code) => {
                        if !self.half_open {
                            let at = self.now + self.latency;
                            self.to_server.queue.push_back((at, Packet::Close(code)));
                        }
                    }
                    Transmit::Drop => {
                        // The server's side of a dropped socket sees it end.
                        self.to_server.queue.clear();
                        self.to_client.queue.clear();
                        if let Some(mut end) = self.server.take() {
                            end.session.release_all();
                            self.drain_server(&mut end);
                        }
                    }
                }
            }
            while let Some(event) = self.client.poll_event() {
                busy = true;
                self.on_client_event(event);
            }
            if !busy {
                break;
            }
        }
    }

    fn on_client_event(&mut self, event: ClientEvent) {
        let now = self.now;
        self.events.push((self.elapsed(), event.clone()));
        match event {
            ClientEvent::Connect => {
                // A socket takes a round trip to open.
                self.connecting_at = Some(now + self.latency * 2);
            }
            ClientEvent::Opened { doc, .. } => {
                let replica = self.replicas.entry(doc.clone()).or_default();
                let step1 = encode_step1(&replica.transact().state_vector());
                self.client.send_sync(&doc, step1);
            }
            ClientEvent::Step1 { doc, payload } => {
                let Ok(SyncPayload::Step1(remote)) = decode_sync(&payload) else {
                    panic!("step 1 undecodable");
                };
                let replica = self.replicas.entry(doc.clone()).or_default();
                let diff = replica.transact().encode_state_as_update_v1(&remote);
                let through = self
                    .pending
                    .get(&doc)
                    .and_then(|p| p.last())
                    .map_or(0, |(id, _)| *id);
                self.client.answer_step1(&doc, encode_step2(diff), through);
            }
            ClientEvent::Update { doc, payload, .. } => {
                let update = match decode_sync(&payload) {
                    Ok(SyncPayload::Step2(u) | SyncPayload::Update(u)) => u,
                    other => panic!("not an update: {other:?}"),
                };
                let replica = self.replicas.entry(doc).or_default();
                replica.transact_mut().apply_update(update).unwrap();
            }
            ClientEvent::Acked { doc, through } => {
                if let Some(pending) = self.pending.get_mut(&doc) {
                    pending.retain(|(id, _)| *id > through);
                }
            }
            _ => {}
        }
    }

    /// The statuses the client reported, in order.
    pub(crate) fn statuses(&self) -> Vec<Status> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::Status(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn last_status(&self) -> Option<Status> {
        self.statuses().pop()
    }

    /// When the client was told to connect, in order.
    pub(crate) fn connects(&self) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, ClientEvent::Connect))
            .map(|(at, _)| *at)
            .collect()
    }

    pub(crate) fn count(&self, pred: impl Fn(&ClientEvent) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| pred(e)).count()
    }

    /// Whether the client is connected and welcomed.
    pub(crate) fn up(&self) -> bool {
        self.client.is_welcomed()
    }

    /// Encodes a frame as a hand-written client would.
    pub(crate) fn frame(channel: u32, message: Message) -> Vec<u8> {
        Frame::new(ChannelId(channel), message).encode()
    }
}

/// A text of `len` characters that yrs cannot compress.
pub(crate) fn noise(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}
