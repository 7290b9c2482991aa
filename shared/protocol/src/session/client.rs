//! The client's end, sans-IO, across connections: when to open a socket and when to give up
//! (the close-code reactions of §10 and the schedule of §8.2), HELLO / WELCOME, the heartbeat
//! watchdog, one channel per document with re-opens after a retrying channel close (§8.2),
//! reassembly, write numbering and which local edits an ACK makes durable (§6.5), and
//! requests waiting for their replies (§5.4, §6.9).
//!
//! The application keeps the documents themselves (the CRDT, the local store): the session
//! tells it what arrived ([`ClientEvent`]) and it answers with what to send
//! ([`ClientSession::send_sync`], [`ClientSession::answer_step1`],
//! [`ClientSession::local_update`], …). Frames to write come out of
//! [`ClientSession::poll_transmit`]; the session never reads a clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::timers::Timers;
use crate::request::{Reply, ReplyBody, Request, RequestOp};
use crate::ysync::{SYNC_STEP_1, SYNC_STEP_2};
use crate::{
    encode_fragmented, Access, BackoffPolicy, ChannelCode, ChannelId, CloseCode, DocId, Frame,
    Heartbeat, HeartbeatConfig, HeartbeatEvent, Hello, Limits, Message, Reaction, Reassembler,
    PROTOCOL_REVISION,
};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in HELLO.
    pub client_name: String,
    pub backoff: BackoffPolicy,
    /// Seeds the jitter of every delay (a test fixes it; an application picks it at random).
    pub seed: u64,
}

/// The connection, as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Opening a socket; `attempt` 0 is the first try.
    Connecting { attempt: u32 },
    /// WELCOME arrived; `rtt` is the last measured round trip.
    Connected { rtt: Option<Duration> },
    /// Waiting `retry_in` before attempt `attempt`, after an ending with `last_code`.
    Reconnecting {
        retry_in: Duration,
        attempt: u32,
        last_code: u16,
        reason: String,
    },
    /// Refused for good (`Stop` or `DoNotReopen`): waits for a new token or trust.
    Refused { reason: String },
    /// The token was refused or ran out: waits for a new one.
    AuthFailed { reason: String },
    /// The server's certificate is not trusted: waits for a new trust.
    Untrusted,
    /// Closed on request.
    Closed,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Open a socket now, then call [`ClientSession::connected`] or
    /// [`ClientSession::connect_failed`].
    Connect,
    Status(Status),
    /// The channel of `doc` opened with `access`: send its state vector
    /// ([`ClientSession::send_sync`]) and presence.
    Opened {
        doc: DocId,
        access: Access,
    },
    /// The server's state vector: answer with [`ClientSession::answer_step1`].
    Step1 {
        doc: DocId,
        payload: Vec<u8>,
    },
    /// The server's step 2 (`step2`, after which the document is in sync) or an update: apply
    /// it and store it.
    Update {
        doc: DocId,
        payload: Vec<u8>,
        step2: bool,
    },
    Awareness {
        doc: DocId,
        payload: Vec<u8>,
    },
    /// `received` bytes of a fragmented message have arrived for `doc`.
    Receiving {
        doc: DocId,
        received: usize,
    },
    /// Every local edit up to the application's ID `through` is durable on the server.
    Acked {
        doc: DocId,
        through: i64,
    },
    /// The document's channel is gone for now; it is re-opened later (after a delay, or on the
    /// next connection).
    Offline {
        doc: DocId,
    },
    /// The server refused or closed the document for good (a `DoNotReopen` code).
    Failed {
        doc: DocId,
        code: u16,
        reason: String,
    },
    Reply {
        id: u32,
        result: Result<ReplyBody, RequestFailure>,
    },
    /// The request's channel or connection ended before its reply.
    Unanswered {
        id: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFailure {
    /// The server refused it with this channel code.
    Refused { code: u16, reason: String },
    /// The reply could not be read.
    BadReply(String),
}

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// No connection is up.
    Offline,
    /// The document's channel is not open.
    NotOpen,
}

/// What to write on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A binary WebSocket message (one mux frame).
    Frame(Vec<u8>),
    /// Send a Close frame with this code, then end the socket.
    Close(CloseCode),
    /// End the socket without a Close (the peer is presumed dead, §8.1).
    Drop,
}

/// Which credential changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Token,
    Trust,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    Heartbeat,
    Reconnect,
    Reopen(DocId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// A socket is being opened.
    Connecting,
    /// The socket is up and HELLO sent; WELCOME has not come.
    Greeting,
    Up {
        welcomed_at: Instant,
    },
    /// Waiting to reconnect.
    Waiting,
    /// No automatic reconnect until a credential changes: a new token, a new trust.
    Held {
        token: bool,
        trust: bool,
    },
    Closed,
}

/// A document the application holds, across connections.
#[derive(Debug)]
struct DocSlot {
    access: Access,
    channel: Option<ChannelId>,
    /// Closed by the server with a code meaning "do not reopen".
    failed: bool,
    reopen_attempt: u32,
    /// When the channel last opened: one that stayed open long enough resets `reopen_attempt`.
    opened_at: Option<Instant>,
}

#[derive(Debug)]
struct Chan {
    doc: DocId,
    /// The access granted by OPENED; writes are only sent on write channels.
    granted: Option<Access>,
    /// We sent CLOSE and wait for the answer.
    closing: bool,
    synced: bool,
    /// We answered the server's step 1. Until then local edits are not sent on their own:
    /// the step 2 carries them, and an update sent before it could start past what the server
    /// holds (§6.4), which the server refuses.
    answered: bool,
    /// Writes sent (the server numbers them the same way).
    seq: u64,
    /// (write number, the application's highest local-edit ID that write carries).
    watermarks: VecDeque<(u64, i64)>,
    reassembler: Reassembler,
}

#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    rng: u64,
    conn: Conn,
    attempt: u32,
    heartbeat: Heartbeat,
    limits: Limits,
    timers: Timers<Timer>,
    docs: BTreeMap<DocId, DocSlot>,
    channels: HashMap<ChannelId, Chan>,
    next_channel: u32,
    /// Requests sent and not yet answered: (channel, operation), by request ID.
    requests: HashMap<u32, (ChannelId, u8)>,
    next_request: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    /// A session that connects at once (`online`), or one that only holds documents until
    /// [`ClientSession::go_online`].
    pub fn new(now: Instant, config: ClientConfig, online: bool) -> Self {
        let mut session = Self {
            rng: config.seed | 1,
            config,
            conn: Conn::Closed,
            attempt: 0,
            heartbeat: Heartbeat::new(now, HeartbeatConfig::DEFAULT),
            limits: Limits::default(),
            timers: Timers::new(),
            docs: BTreeMap::new(),
            channels: HashMap::new(),
            next_channel: 1,
            requests: HashMap::new(),
            next_request: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if online {
            session.go_online();
        }
        session
    }

    /// Starts connecting.
    pub fn go_online(&mut self) {
        self.attempt = 0;
        self.start_connecting();
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The socket is up (TLS and the upgrade done): say HELLO.
    pub fn connected(&mut self, now: Instant) {
        if self.conn != Conn::Connecting {
            return;
        }
        self.conn = Conn::Greeting;
        self.limits = Limits::default();
        // Until WELCOME the defaults apply (§8.1).
        self.heartbeat = Heartbeat::new(now, HeartbeatConfig::DEFAULT);
        self.timers
            .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
        let hello = Hello {
            revision: PROTOCOL_REVISION,
            client: self.config.client_name.clone(),
        };
        self.send(ChannelId::CONTROL, Message::Hello(hello));
    }

    /// Opening the socket failed, with the reaction its cause calls for (§2.3).
    pub fn connect_failed(&mut self, now: Instant, reaction: Reaction, reason: impl Into<String>) {
        if self.conn != Conn::Connecting {
            return;
        }
        self.after_ending(now, reaction, CloseCode::Abnormal, reason.into(), None);
    }

    /// The server's certificate is not trusted: wait for a new trust.
    pub fn untrusted(&mut self) {
        if self.conn != Conn::Connecting {
            return;
        }
        self.conn = Conn::Held {
            token: false,
            trust: true,
        };
        self.events
            .push_back(ClientEvent::Status(Status::Untrusted));
    }

    /// The socket ended: the server's Close frame with `code`, or 1006 for a lost socket.
    pub fn socket_closed(&mut self, now: Instant, code: CloseCode, reason: impl Into<String>) {
        if matches!(self.conn, Conn::Greeting | Conn::Up { .. }) {
            self.end_connection(now, code, reason.into());
        }
    }

    /// A token or a trust was set: reconnect now if the session waits for it, or cut a
    /// backoff wait short.
    pub fn credential_changed(&mut self, kind: Credential) {
        match self.conn {
            Conn::Held { token, trust }
                if (kind == Credential::Token && token) || (kind == Credential::Trust && trust) =>
            {
                self.attempt = 0;
                self.start_connecting();
            }
            Conn::Waiting => self.start_connecting(),
            _ => {}
        }
    }

    /// Closes the connection for good with `code`; documents stay where they are.
    pub fn shutdown(&mut self, code: CloseCode) {
        if matches!(self.conn, Conn::Greeting | Conn::Up { .. }) {
            self.transmits.push_back(Transmit::Close(code));
            self.drop_channels();
        }
        self.conn = Conn::Closed;
        self.timers = Timers::new();
        self.events.push_back(ClientEvent::Status(Status::Closed));
    }

    /// Whether a socket is up (greeting or welcomed).
    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Greeting | Conn::Up { .. })
    }

    /// Whether WELCOME has arrived on the current socket.
    pub fn is_welcomed(&self) -> bool {
        matches!(self.conn, Conn::Up { .. })
    }

    /// Bytes are arriving (perhaps of a frame not yet whole): the server is alive (§8.1).
    pub fn note_read_activity(&mut self, at: Instant) {
        if self.is_connected() {
            self.heartbeat.on_traffic(at);
            self.timers
                .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.expired(now) {
            match timer {
                Timer::Heartbeat if self.is_connected() => {
                    match self.heartbeat.handle_timeout(now) {
                        Some(HeartbeatEvent::SendPing(nonce)) if self.is_welcomed() => {
                            self.send(ChannelId::CONTROL, Message::Ping(nonce));
                        }
                        Some(HeartbeatEvent::Expired) => {
                            self.transmits.push_back(Transmit::Drop);
                            self.end_connection(
                                now,
                                CloseCode::HeartbeatTimeout,
                                "no traffic from the server within the heartbeat timeout".into(),
                            );
                            continue;
                        }
                        _ => {}
                    }
                    self.timers
                        .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
                }
                Timer::Heartbeat => {}
                Timer::Reconnect => {
                    if self.conn == Conn::Waiting {
                        self.start_connecting();
                    }
                }
                Timer::Reopen(doc) => {
                    let due = self
                        .docs
                        .get(&doc)
                        .is_some_and(|slot| !slot.failed && slot.channel.is_none());
                    if due && self.is_welcomed() {
                        self.open_channel(&doc);
                    }
                }
            }
        }
    }

    /// A text WebSocket message arrived (1003).
    pub fn handle_text(&mut self, now: Instant) {
        self.violation(
            now,
            CloseCode::UnsupportedData,
            "the server sent a text frame".into(),
        );
    }

    /// A binary WebSocket message (one mux frame) arrived.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) {
        if !self.is_connected() {
            return;
        }
        self.heartbeat.on_traffic(now);
        self.timers
            .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
        // The server splits its messages to its own announced limit; we accept any frame size
        // and hold messages to max_message_size.
        let receive_limits = Limits {
            max_frame_size: u32::MAX,
            ..self.limits
        };
        let frame = match Frame::decode(bytes, &receive_limits) {
            Ok(frame) => frame,
            Err(err) => {
                let code = err.close_code();
                return self.violation(now, code, format!("bad frame from the server: {err}"));
            }
        };
        let channel = frame.channel;
        match frame.message {
            Message::Welcome(welcome) => {
                if self.conn != Conn::Greeting {
                    return self.violation(
                        now,
                        CloseCode::ProtocolError,
                        "a second WELCOME".into(),
                    );
                }
                self.limits = welcome.limits;
                self.heartbeat.reconfigure(
                    now,
                    HeartbeatConfig {
                        interval: Duration::from_millis(welcome.heartbeat_interval_ms.into()),
                        timeout: Duration::from_millis(welcome.heartbeat_timeout_ms.into()),
                    },
                );
                self.timers
                    .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
                self.conn = Conn::Up { welcomed_at: now };
                self.events
                    .push_back(ClientEvent::Status(Status::Connected { rtt: None }));
                let docs: Vec<DocId> = self
                    .docs
                    .iter()
                    .filter(|(_, slot)| !slot.failed)
                    .map(|(doc, _)| doc.clone())
                    .collect();
                for doc in docs {
                    self.open_channel(&doc);
                }
            }
            Message::Ping(nonce) => self.send(ChannelId::CONTROL, Message::Pong(nonce)),
            Message::Pong(nonce) => {
                if let Some(rtt) = self.heartbeat.on_pong(now, nonce) {
                    self.events
                        .push_back(ClientEvent::Status(Status::Connected { rtt: Some(rtt) }));
                }
            }
            Message::Opened { access } => self.on_opened(now, channel, access),
            Message::Close { code, reason } => self.on_channel_close(now, channel, code, reason),
            Message::Reply(body) if channel.is_control() => self.on_reply(&body),
            message @ (Message::Sync(_)
            | Message::Awareness(_)
            | Message::Fragment(_)
            | Message::Reply(_)) => self.on_channel_data(now, channel, message),
            Message::Ack(seq) => self.on_ack(channel, seq),
            Message::Hello(_) | Message::Open { .. } | Message::Request(_) => self.violation(
                now,
                CloseCode::ProtocolError,
                "client-only message from the server".into(),
            ),
        }
    }

    /// The application holds `doc` (wanting `access`): its channel opens now if connected,
    /// else at the next WELCOME.
    pub fn open_doc(&mut self, doc: DocId, access: Access) {
        if self.docs.contains_key(&doc) {
            return;
        }
        self.docs.insert(
            doc.clone(),
            DocSlot {
                access,
                channel: None,
                failed: false,
                reopen_attempt: 0,
                opened_at: None,
            },
        );
        if self.is_welcomed() {
            self.open_channel(&doc);
        }
    }

    /// The application is done with `doc`: its presence is withdrawn (`awareness_removal`)
    /// and its channel closed.
    pub fn close_doc(&mut self, doc: &DocId, awareness_removal: Option<Vec<u8>>) {
        let Some(slot) = self.docs.remove(doc) else {
            return;
        };
        self.timers.cancel(&Timer::Reopen(doc.clone()));
        let Some(channel) = slot.channel else {
            return;
        };
        if let Some(chan) = self.channels.get_mut(&channel) {
            chan.closing = true;
            let opened = chan.granted.is_some();
            if let (true, Some(removal)) = (opened, awareness_removal) {
                self.send(channel, Message::Awareness(removal));
            }
            self.send(channel, close_message(ChannelCode::Normal));
        }
    }

    /// The documents this session holds, and whether each failed for good.
    pub fn docs(&self) -> impl Iterator<Item = (&DocId, bool)> {
        self.docs.iter().map(|(doc, slot)| (doc, slot.failed))
    }

    /// Whether the server closed the document for good (a `DoNotReopen` code).
    pub fn is_failed(&self, doc: &DocId) -> bool {
        self.docs.get(doc).is_some_and(|slot| slot.failed)
    }

    /// Whether the document's channel has received the server's step 2.
    pub fn is_synced(&self, doc: &DocId) -> bool {
        self.chan(doc).is_some_and(|chan| chan.synced)
    }

    /// Whether `doc`'s channel is open for writing but still holds local edits back: they
    /// wait for the step 2 that answers the server's step 1. (A read-only channel never sends
    /// them.)
    pub fn holds_back_edits(&self, doc: &DocId) -> bool {
        self.chan(doc)
            .is_some_and(|chan| chan.granted == Some(Access::Write) && !chan.answered)
    }

    /// Sends a SYNC payload that is not a write (the step 1 after OPENED).
    pub fn send_sync(&mut self, doc: &DocId, payload: Vec<u8>) {
        if let Some(channel) = self.live_channel(doc) {
            self.send(channel, Message::Sync(payload));
        }
    }

    /// Answers the server's step 1 with `step2`, which carries the local edits up to the
    /// application's ID `through`.
    pub fn answer_step1(&mut self, doc: &DocId, step2: Vec<u8>, through: i64) {
        let Some(channel) = self.live_channel(doc) else {
            return;
        };
        let Some(chan) = self.channels.get_mut(&channel) else {
            return;
        };
        chan.seq += 1;
        chan.watermarks.push_back((chan.seq, through));
        chan.answered = true;
        self.send(channel, Message::Sync(step2));
    }

    /// A local edit (a SYNC update payload) with the application's ID `id`. Sent only on a
    /// write channel past its step 2; otherwise it stays pending and a later step 2 carries
    /// it. Returns whether it was sent.
    pub fn local_update(&mut self, doc: &DocId, payload: Vec<u8>, id: i64) -> bool {
        let Some(channel) = self.live_channel(doc) else {
            return false;
        };
        let Some(chan) = self.channels.get_mut(&channel) else {
            return false;
        };
        // On a read-only channel local edits stay local (and pending): the server would
        // refuse them and close the channel.
        if !chan.answered || chan.granted != Some(Access::Write) {
            return false;
        }
        chan.seq += 1;
        chan.watermarks.push_back((chan.seq, id));
        self.send(channel, Message::Sync(payload));
        true
    }

    /// Sends an awareness payload on the document's open channel.
    pub fn send_awareness(&mut self, doc: &DocId, payload: Vec<u8>) {
        let Some(channel) = self.live_channel(doc) else {
            return;
        };
        if self
            .channels
            .get(&channel)
            .is_some_and(|c| c.granted.is_some())
        {
            self.send(channel, Message::Awareness(payload));
        }
    }

    /// Sends a request on `doc`'s channel, or on channel 0 for `None`; returns its ID, which
    /// its [`ClientEvent::Reply`] or [`ClientEvent::Unanswered`] carries.
    pub fn request(&mut self, doc: Option<&DocId>, op: RequestOp) -> Result<u32, NotSent> {
        if !self.is_welcomed() {
            return Err(NotSent::Offline);
        }
        let channel = match doc {
            None => ChannelId::CONTROL,
            Some(doc) => self
                .live_channel(doc)
                .filter(|channel| self.channels[channel].granted.is_some())
                .ok_or(NotSent::NotOpen)?,
        };
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        let code = op.code();
        self.send(channel, Message::Request(Request::new(id, op).encode()));
        self.requests.insert(id, (channel, code));
        Ok(id)
    }

    fn start_connecting(&mut self) {
        self.timers.cancel(&Timer::Reconnect);
        self.conn = Conn::Connecting;
        self.events
            .push_back(ClientEvent::Status(Status::Connecting {
                attempt: self.attempt,
            }));
        self.events.push_back(ClientEvent::Connect);
    }

    fn violation(&mut self, now: Instant, code: CloseCode, reason: String) {
        self.transmits.push_back(Transmit::Close(code));
        self.end_connection(now, code, reason);
    }

    /// The current socket is over: its channels and requests end, and the reaction to
    /// `code` decides what comes next (§8.2).
    fn end_connection(&mut self, now: Instant, code: CloseCode, reason: String) {
        let uptime = match self.conn {
            Conn::Up { welcomed_at } => Some(now.saturating_duration_since(welcomed_at)),
            _ => None,
        };
        self.drop_channels();
        self.after_ending(now, code.reaction(), code, reason, uptime);
    }

    fn drop_channels(&mut self) {
        self.timers.cancel(&Timer::Heartbeat);
        self.channels.clear();
        for (doc, slot) in self.docs.iter_mut() {
            slot.channel = None;
            if !slot.failed {
                self.events
                    .push_back(ClientEvent::Offline { doc: doc.clone() });
            }
        }
        let mut ids: Vec<u32> = self.requests.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        self.events
            .extend(ids.into_iter().map(|id| ClientEvent::Unanswered { id }));
    }

    fn after_ending(
        &mut self,
        now: Instant,
        reaction: Reaction,
        code: CloseCode,
        reason: String,
        uptime: Option<Duration>,
    ) {
        match reaction {
            Reaction::Stop | Reaction::DoNotReopen => {
                self.conn = Conn::Held {
                    token: true,
                    trust: true,
                };
                self.events
                    .push_back(ClientEvent::Status(Status::Refused { reason }));
            }
            Reaction::WaitForNewCredentials => {
                self.conn = Conn::Held {
                    token: true,
                    trust: false,
                };
                self.events
                    .push_back(ClientEvent::Status(Status::AuthFailed { reason }));
            }
            Reaction::RetrySoon | Reaction::RetryWithBackoff | Reaction::ReportBugThenRetry => {
                let backoff = self.config.backoff;
                // §8.2: a connection that stayed up long enough starts the schedule afresh.
                if uptime.is_some_and(|up| up >= backoff.stable_after) {
                    self.attempt = 0;
                }
                let random = self.random();
                let delay = backoff
                    .delay_for(reaction, self.attempt, random)
                    .unwrap_or(backoff.cap);
                self.conn = Conn::Waiting;
                self.timers.set(Timer::Reconnect, now + delay);
                self.events
                    .push_back(ClientEvent::Status(Status::Reconnecting {
                        retry_in: delay,
                        attempt: self.attempt + 1,
                        last_code: code.as_u16(),
                        reason,
                    }));
                self.attempt = self.attempt.saturating_add(1);
            }
        }
    }

    fn open_channel(&mut self, doc: &DocId) {
        let Some(slot) = self.docs.get_mut(doc) else {
            return;
        };
        self.timers.cancel(&Timer::Reopen(doc.clone()));
        let channel = ChannelId(self.next_channel);
        self.next_channel += 1;
        slot.channel = Some(channel);
        let access = slot.access;
        self.channels.insert(
            channel,
            Chan {
                doc: doc.clone(),
                granted: None,
                closing: false,
                synced: false,
                answered: false,
                seq: 0,
                watermarks: VecDeque::new(),
                reassembler: Reassembler::default(),
            },
        );
        self.events.push_back(ClientEvent::Receiving {
            doc: doc.clone(),
            received: 0,
        });
        self.send(
            channel,
            Message::Open {
                access,
                doc: doc.clone(),
            },
        );
    }

    fn on_opened(&mut self, now: Instant, channel: ChannelId, access: Access) {
        let Some(chan) = self.channels.get_mut(&channel) else {
            return;
        };
        if chan.closing {
            return;
        }
        chan.granted = Some(access);
        let doc = chan.doc.clone();
        if let Some(slot) = self.docs.get_mut(&doc) {
            slot.opened_at = Some(now);
        }
        self.events.push_back(ClientEvent::Opened { doc, access });
    }

    fn on_channel_close(&mut self, now: Instant, channel: ChannelId, code: u16, reason: String) {
        let Some(chan) = self.channels.remove(&channel) else {
            return;
        };
        let mut unanswered: Vec<u32> = self
            .requests
            .iter()
            .filter(|(_, (on, _))| *on == channel)
            .map(|(id, _)| *id)
            .collect();
        unanswered.sort_unstable();
        for id in unanswered {
            self.requests.remove(&id);
            self.events.push_back(ClientEvent::Unanswered { id });
        }
        if chan.closing {
            return;
        }
        if chan.granted.is_some() {
            // Answer the server's close; a refusal of OPEN needs no answer.
            self.send(channel, close_message(ChannelCode::Normal));
        }
        let backoff = self.config.backoff;
        let random = self.random();
        let Some(slot) = self.docs.get_mut(&chan.doc) else {
            return;
        };
        slot.channel = None;
        match ChannelCode::from_u16(code).reaction() {
            Reaction::DoNotReopen | Reaction::Stop => {
                slot.failed = true;
                self.events.push_back(ClientEvent::Failed {
                    doc: chan.doc,
                    code,
                    reason,
                });
            }
            reaction => {
                let stable = slot
                    .opened_at
                    .take()
                    .is_some_and(|at| now.saturating_duration_since(at) >= backoff.stable_after);
                if stable {
                    slot.reopen_attempt = 0;
                }
                let delay = backoff
                    .delay_for(reaction, slot.reopen_attempt, random)
                    .unwrap_or(backoff.cap);
                slot.reopen_attempt += 1;
                self.timers
                    .set(Timer::Reopen(chan.doc.clone()), now + delay);
                self.events
                    .push_back(ClientEvent::Offline { doc: chan.doc });
            }
        }
    }

    fn on_channel_data(&mut self, now: Instant, channel: ChannelId, message: Message) {
        let max = self.limits.max_message_size;
        let Some(chan) = self.channels.get_mut(&channel) else {
            return;
        };
        if chan.closing {
            return;
        }
        let doc = chan.doc.clone();
        match chan.reassembler.push(message, max) {
            Ok(Some(Message::Sync(payload))) => {
                let event = match payload.first().map(|tag| u64::from(*tag)) {
                    Some(SYNC_STEP_1) => ClientEvent::Step1 { doc, payload },
                    tag => {
                        let step2 = tag == Some(SYNC_STEP_2);
                        if step2 {
                            chan.synced = true;
                        }
                        ClientEvent::Update {
                            doc,
                            payload,
                            step2,
                        }
                    }
                };
                self.events.push_back(event);
            }
            Ok(Some(Message::Awareness(payload))) => self
                .events
                .push_back(ClientEvent::Awareness { doc, payload }),
            Ok(Some(Message::Reply(body))) => self.on_reply(&body),
            Ok(_) => {
                let received = chan.reassembler.buffered();
                self.events
                    .push_back(ClientEvent::Receiving { doc, received });
            }
            Err(err) => self.violation(now, err.close_code(), err.to_string()),
        }
    }

    fn on_ack(&mut self, channel: ChannelId, seq: u64) {
        let Some(chan) = self.channels.get_mut(&channel) else {
            return;
        };
        let mut through = None;
        while chan.watermarks.front().is_some_and(|(n, _)| *n <= seq) {
            through = chan.watermarks.pop_front().map(|(_, id)| id).max(through);
        }
        if let Some(through) = through {
            self.events.push_back(ClientEvent::Acked {
                doc: chan.doc.clone(),
                through,
            });
        }
    }

    fn on_reply(&mut self, body: &[u8]) {
        let Ok(id) = Reply::peek_id(body) else {
            return;
        };
        let Some((_, op)) = self.requests.remove(&id) else {
            return;
        };
        let result = match Reply::decode(body, op) {
            Ok(Reply {
                outcome: Ok(body), ..
            }) => Ok(body),
            Ok(Reply {
                outcome: Err((code, reason)),
                ..
            }) => Err(RequestFailure::Refused { code, reason }),
            Err(err) => Err(RequestFailure::BadReply(err.to_string())),
        };
        self.events.push_back(ClientEvent::Reply { id, result });
    }

    fn chan(&self, doc: &DocId) -> Option<&Chan> {
        let channel = self.docs.get(doc)?.channel?;
        self.channels.get(&channel)
    }

    /// The document's channel, if it is open or opening and not closing.
    fn live_channel(&self, doc: &DocId) -> Option<ChannelId> {
        let channel = self.docs.get(doc)?.channel?;
        let chan = self.channels.get(&channel)?;
        (!chan.closing).then_some(channel)
    }

    fn send(&mut self, channel: ChannelId, message: Message) {
        let max_frame = self.limits.max_frame_size;
        let transmits = &mut self.transmits;
        encode_fragmented(channel, &message, max_frame, |frame| {
            transmits.push_back(Transmit::Frame(frame));
        });
    }

    /// xorshift64*: jitter needs spread, not secrecy.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn close_message(code: ChannelCode) -> Message {
    Message::Close {
        code: code.as_u16(),
        reason: String::new(),
    }
}
