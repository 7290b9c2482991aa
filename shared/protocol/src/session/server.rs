//! The server's end of one connection, sans-IO: frames and `now` in; control frames to send,
//! work for documents and the connection's ending out, and the next deadline. It owns HELLO /
//! WELCOME, the heartbeat and the time allowed for HELLO, the token's expiry, the channel table
//! (open, draining after the client's CLOSE, closing after ours), reassembly of fragmented
//! messages with the connection-wide limit and its time limit, read-only channels, the error
//! budget, and which rules close a channel and which the connection (PROTOCOL §5, §6, §7, §9).
//!
//! What it does not do is the application's: it never touches a document. Opening asks the
//! application ([`ServerOutput::Open`]), which answers with [`ServerSession::accept_open`] or
//! [`ServerSession::refuse_open`]; whole messages go out as work for the channel's room `R`
//! (whatever handle the application keeps per channel), and the room's answers come back
//! through [`ServerSession::room_closed`], [`ServerSession::open_failed`] and
//! [`ServerSession::drained`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error_budget::ErrorBudget;
use super::timers::Timers;
use crate::frame::peek_channel;
use crate::request::{Reply, Request};
use crate::ysync::is_write;
use crate::{
    Access, ChannelCode, ChannelId, ChannelMap, CloseCode, DocId, Frame, FrameError, Heartbeat,
    HeartbeatConfig, HeartbeatEvent, Limits, Message, Reassembler, Welcome, PROTOCOL_REVISION,
};

/// What the server announces and enforces on one connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub conn_id: u64,
    pub heartbeat: HeartbeatConfig,
    pub limits: Limits,
    /// How long a fragmented message may take to finish (§7).
    pub fragment_timeout: Duration,
    /// When the client's token runs out (4001), if it does.
    pub token_expires: Option<Instant>,
}

/// The timers the server runs for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Ping due or peer silent; before HELLO, the time allowed for it.
    Heartbeat,
    TokenExpiry,
    /// The oldest unfinished fragmented message runs out of time.
    Fragment,
}

/// One document channel's state on the connection.
#[derive(Debug)]
enum Channel<R> {
    /// The application was asked to open it and has not answered.
    Asked,
    /// Open (or opening: the room sends OPENED once the document is loaded).
    Open(OpenChannel<R>),
    /// The client sent CLOSE; the reply waits until every write it sent before is durable and
    /// acknowledged (§6.3). Frames meanwhile are ignored.
    Draining(OpenChannel<R>),
    /// The server sent CLOSE and waits for the client's; frames meanwhile are ignored.
    Closing,
}

#[derive(Debug)]
struct OpenChannel<R> {
    room: R,
    /// Which opening on this connection this is; tells its answers from an earlier channel's
    /// on the same ID.
    generation: u64,
    access: Access,
    /// Writes (sync step 2 / update) received so far: the sequence number for ACK.
    writes: u64,
    /// The fragmented message in progress, if one is. Boxed: a channel is rarely in the
    /// middle of one, and a connection may hold a thousand channels (docs/BENCHMARKS.md, S7).
    unfinished: Option<Box<Unfinished>>,
}

/// A fragmented message arriving on a channel.
#[derive(Debug)]
struct Unfinished {
    reassembler: Reassembler,
    /// When its first piece arrived.
    started: Instant,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum ServerOutput<R> {
    /// Send this connection-control frame (WELCOME, PING, PONG, a REPLY on channel 0), ahead
    /// of document frames.
    Control(Message),
    /// Send CLOSE on `channel`, after the frames already queued for it.
    CloseChannel {
        channel: ChannelId,
        code: ChannelCode,
    },
    /// Send this message on an open channel (a REPLY refusing a request).
    Send {
        channel: ChannelId,
        generation: u64,
        message: Message,
    },
    /// The client asks for `doc` on `channel`; answer with [`ServerSession::accept_open`] or
    /// [`ServerSession::refuse_open`].
    Open {
        channel: ChannelId,
        doc: DocId,
        requested: Access,
    },
    /// A whole SYNC for the channel's room; `seq` numbers the channel's writes (§6.5).
    Sync {
        channel: ChannelId,
        generation: u64,
        room: R,
        seq: u64,
        payload: Vec<u8>,
    },
    /// A whole AWARENESS for the channel's room.
    Awareness {
        channel: ChannelId,
        generation: u64,
        room: R,
        payload: Vec<u8>,
    },
    /// A request (§5.4, §6.9) with an ID to answer: on channel 0 (`room` is `None`) or on an
    /// open document channel.
    Request {
        channel: ChannelId,
        generation: u64,
        room: Option<(R, Access)>,
        request: Request,
    },
    /// The client closed the channel: reply once its earlier writes are acknowledged, then
    /// call [`ServerSession::drained`].
    CloseAfterWrites {
        channel: ChannelId,
        generation: u64,
        room: R,
    },
    /// The channel is no longer this connection's: leave its room.
    Release { channel: ChannelId, room: R },
    /// The bytes held in unfinished fragmented messages changed (for a memory budget).
    Unfinished(usize),
    /// Close the connection with `code`: at once (the queue is dropped), or after the frames
    /// already queued (`after_queue`: the error budget's 1008 follows the CLOSEs before it).
    CloseConnection { code: CloseCode, after_queue: bool },
}

#[derive(Debug)]
pub struct ServerSession<R> {
    // What of the configuration is needed after the start (kept small: one per connection).
    conn_id: u64,
    limits: Limits,
    fragment_timeout: Duration,
    hello: bool,
    /// A close of the connection has been decided: nothing more is read.
    closed: bool,
    heartbeat: Heartbeat,
    timers: Timers<Timer>,
    channels: ChannelMap<Channel<R>>,
    error_budget: ErrorBudget,
    next_generation: u64,
    out: VecDeque<ServerOutput<R>>,
    /// The latest instant the driver told us about (the error budget's clock for answers
    /// that come from rooms, which carry none).
    now: Instant,
}

impl<R: Clone> ServerSession<R> {
    /// A connection just upgraded at `now`: HELLO is due within the heartbeat timeout.
    pub fn new(now: Instant, config: ServerConfig) -> Self {
        let heartbeat = Heartbeat::new(now, config.heartbeat);
        // The heartbeat's and the token's; a third only while a fragmented message is open.
        let mut timers = Timers::with_capacity(2);
        timers.set(Timer::Heartbeat, heartbeat.poll_timeout());
        if let Some(at) = config.token_expires {
            timers.set(Timer::TokenExpiry, at);
        }
        Self {
            conn_id: config.conn_id,
            limits: config.limits,
            fragment_timeout: config.fragment_timeout,
            hello: false,
            closed: false,
            heartbeat,
            timers,
            channels: ChannelMap::new(),
            error_budget: ErrorBudget::new(now),
            next_generation: 1,
            out: VecDeque::new(),
            now,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<ServerOutput<R>> {
        let output = self.out.pop_front();
        if output.is_none() && self.out.capacity() > 0 {
            // Most connections sit idle between bursts: hold no queue meanwhile.
            self.out = VecDeque::new();
        }
        output
    }

    /// When [`ServerSession::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The connection's close has been decided; the driver reads no more from it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Anything arrived from the peer (a WebSocket Ping or Close counts too).
    pub fn note_traffic(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.heartbeat.on_traffic(now);
        self.timers
            .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        for timer in self.timers.expired(now) {
            match timer {
                Timer::Heartbeat => {
                    match self.heartbeat.handle_timeout(now) {
                        Some(HeartbeatEvent::SendPing(nonce)) if self.hello => {
                            self.out
                                .push_back(ServerOutput::Control(Message::Ping(nonce)));
                        }
                        Some(HeartbeatEvent::Expired) => {
                            let code = if self.hello {
                                CloseCode::HeartbeatTimeout
                            } else {
                                CloseCode::HelloExpected
                            };
                            self.close_connection(code, false);
                        }
                        Some(HeartbeatEvent::SendPing(_)) | None => {}
                    }
                    if !self.closed {
                        self.timers
                            .set(Timer::Heartbeat, self.heartbeat.poll_timeout());
                    }
                }
                Timer::TokenExpiry => self.close_connection(CloseCode::TokenExpired, false),
                Timer::Fragment => {
                    if self.fragment_deadline().is_some_and(|at| at <= now) {
                        self.close_connection(CloseCode::PolicyViolation, false);
                    } else {
                        self.arm_fragment_timer();
                    }
                }
            }
        }
    }

    /// A text WebSocket message arrived (1003).
    pub fn handle_text(&mut self, now: Instant) {
        self.note_traffic(now);
        self.violation(CloseCode::UnsupportedData);
    }

    /// A binary WebSocket message (one mux frame) arrived.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) {
        self.note_traffic(now);
        if self.closed {
            return;
        }
        let frame = match Frame::decode(bytes, &self.limits) {
            Ok(frame) => frame,
            Err(err) => return self.on_frame_error(bytes, err),
        };
        if !self.hello && !matches!(frame.message, Message::Hello(_)) {
            return self.violation(CloseCode::HelloExpected);
        }
        let channel = frame.channel;
        match frame.message {
            Message::Hello(hello) => {
                // §5.1: revision 1 is the only one there is; a HELLO fits the smallest frame
                // limit any server may announce.
                if self.hello
                    || hello.revision != PROTOCOL_REVISION
                    || bytes.len() > Limits::MIN_FRAME_SIZE as usize
                {
                    return self.violation(CloseCode::ProtocolError);
                }
                self.hello = true;
                let heartbeat = self.heartbeat.config();
                let welcome = Welcome {
                    conn_id: self.conn_id,
                    heartbeat_interval_ms: heartbeat.interval.as_millis() as u32,
                    heartbeat_timeout_ms: heartbeat.timeout.as_millis() as u32,
                    limits: self.limits,
                };
                self.out
                    .push_back(ServerOutput::Control(Message::Welcome(welcome)));
            }
            Message::Ping(nonce) => self
                .out
                .push_back(ServerOutput::Control(Message::Pong(nonce))),
            Message::Pong(nonce) => {
                self.heartbeat.on_pong(now, nonce);
            }
            Message::Open { access, doc } => self.on_open(channel, access, doc),
            Message::Close { .. } => self.on_client_close(channel),
            Message::Request(body) if channel.is_control() => self.on_request(channel, &body),
            message @ (Message::Sync(_)
            | Message::Awareness(_)
            | Message::Fragment(_)
            | Message::Request(_)) => self.on_channel_data(now, channel, message),
            Message::Welcome(_) | Message::Opened { .. } | Message::Ack(_) | Message::Reply(_) => {
                self.violation(CloseCode::ProtocolError)
            }
        }
    }

    /// The application opened the channel it was asked for, with `access`; returns the
    /// channel's generation, or the room back if the channel no longer waits for this answer.
    pub fn accept_open(&mut self, channel: ChannelId, access: Access, room: R) -> Result<u64, R> {
        if !matches!(self.channels.get(channel), Some(Channel::Asked)) {
            return Err(room);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.channels.insert(
            channel,
            Channel::Open(OpenChannel {
                room,
                generation,
                access,
                writes: 0,
                unfinished: None,
            }),
        );
        Ok(generation)
    }

    /// The application refused the channel it was asked for (§6.2: the ID is free again).
    pub fn refuse_open(&mut self, channel: ChannelId, code: ChannelCode) {
        if matches!(self.channels.get(channel), Some(Channel::Asked)) {
            self.channels.remove(channel);
            self.send_close(channel, code);
        }
    }

    /// The room closed an open channel (the document was unloaded, trashed, a write refused…).
    pub fn room_closed(&mut self, channel: ChannelId, generation: u64, code: ChannelCode) {
        if self.generation_of(channel) == Some(generation) {
            self.close_channel(channel, code);
        }
    }

    /// The room could not open the document: no OPENED went out, so this is a refusal, after
    /// which the ID is free at once on both ends (§6.2).
    pub fn open_failed(&mut self, channel: ChannelId, generation: u64, code: ChannelCode) {
        if self.generation_of(channel) == Some(generation) {
            if let Some(Channel::Open(open) | Channel::Draining(open)) =
                self.channels.remove(channel)
            {
                self.release(channel, open);
            }
            self.send_close(channel, code);
        }
    }

    /// Every write before the client's CLOSE is acknowledged: reply to it; the ID is free.
    pub fn drained(&mut self, channel: ChannelId, generation: u64) {
        if matches!(self.channels.get(channel), Some(Channel::Draining(open)) if open.generation == generation)
        {
            if let Some(Channel::Draining(open)) = self.channels.remove(channel) {
                self.release(channel, open);
                self.send_close(channel, ChannelCode::Normal);
            }
        }
    }

    /// The rooms of the channels still open or draining (to flush them at shutdown).
    pub fn rooms(&self) -> impl Iterator<Item = &R> {
        self.channels.values().filter_map(|state| match state {
            Channel::Open(open) | Channel::Draining(open) => Some(&open.room),
            Channel::Asked | Channel::Closing => None,
        })
    }

    /// The connection is over: every channel leaves its room.
    pub fn release_all(&mut self) {
        let channels: Vec<_> = self.channels.drain().collect();
        for (channel, state) in channels {
            if let Channel::Open(open) | Channel::Draining(open) = state {
                self.release(channel, open);
            }
        }
        self.closed = true;
    }

    fn on_frame_error(&mut self, bytes: &[u8], err: FrameError) {
        match (err.channel_code(), peek_channel(bytes)) {
            (Some(code), Some(channel)) if self.hello => {
                if self.reassembling(channel) {
                    return self.violation(CloseCode::ProtocolError);
                }
                if self.generation_of(channel).is_some() {
                    self.close_channel(channel, code);
                } else if !self.channels.contains_key(channel) {
                    self.send_close(channel, code);
                }
            }
            _ => self.violation(err.close_code()),
        }
    }

    fn on_open(&mut self, channel: ChannelId, requested: Access, doc: DocId) {
        if self.reassembling(channel) {
            // §7: only the rest of the message may follow its first fragment.
            return self.violation(CloseCode::ProtocolError);
        }
        if self.channels.contains_key(channel) {
            self.close_channel(channel, ChannelCode::ChannelInUse);
            return;
        }
        let in_use = self
            .channels
            .values()
            .filter(|c| !matches!(c, Channel::Closing))
            .count();
        if in_use >= self.limits.max_channels as usize {
            self.send_close(channel, ChannelCode::TooManyChannels);
            return;
        }
        self.channels.insert(channel, Channel::Asked);
        self.out.push_back(ServerOutput::Open {
            channel,
            doc,
            requested,
        });
    }

    fn on_channel_data(&mut self, now: Instant, channel: ChannelId, message: Message) {
        let max_message = self.limits.max_message_size;
        // Per channel, the reassembler stops at max_message_size; across channels the sum of
        // unfinished messages is held to the same limit, so one connection never buffers more
        // than one maximal message however many channels it interleaves (§7).
        let buffered_piece = match &message {
            Message::Fragment(piece) => Some(piece.len()),
            Message::Sync(piece) | Message::Awareness(piece) if self.reassembling(channel) => {
                Some(piece.len())
            }
            _ => None,
        };
        if let Some(len) = buffered_piece {
            if self.unfinished_bytes() + len > max_message as usize {
                return self.violation(CloseCode::MessageTooBig);
            }
        }
        let open = match self.channels.get_mut(channel) {
            Some(Channel::Open(open)) => open,
            Some(Channel::Closing | Channel::Draining(_) | Channel::Asked) => return,
            None => return self.send_close(channel, ChannelCode::UnknownChannel),
        };
        let pushed = match &mut open.unfinished {
            Some(unfinished) => unfinished.reassembler.push(message, max_message),
            None => {
                let mut reassembler = Reassembler::default();
                let pushed = reassembler.push(message, max_message);
                if matches!(pushed, Ok(None)) {
                    open.unfinished = Some(Box::new(Unfinished {
                        reassembler,
                        started: now,
                    }));
                }
                pushed
            }
        };
        let message = match pushed {
            Ok(Some(message)) => {
                open.unfinished = None;
                if buffered_piece.is_some() {
                    self.unfinished_changed();
                }
                message
            }
            Ok(None) => {
                // Also arms the fragment timer for a message that just began.
                self.unfinished_changed();
                return;
            }
            Err(err) => return self.violation(err.close_code()),
        };
        let Some(Channel::Open(open)) = self.channels.get_mut(channel) else {
            return;
        };
        let (generation, room) = (open.generation, open.room.clone());
        match message {
            Message::Sync(payload) => {
                if is_write(&payload) {
                    open.writes += 1;
                    if !open.access.can_write() {
                        return self.close_channel(channel, ChannelCode::ReadOnly);
                    }
                }
                let seq = open.writes;
                self.out.push_back(ServerOutput::Sync {
                    channel,
                    generation,
                    room,
                    seq,
                    payload,
                });
            }
            Message::Awareness(payload) => self.out.push_back(ServerOutput::Awareness {
                channel,
                generation,
                room,
                payload,
            }),
            Message::Request(body) => self.on_request(channel, &body),
            _ => {}
        }
    }

    /// A request: refused at once if it cannot be read (1002 if it has no ID to answer),
    /// otherwise handed to the application.
    fn on_request(&mut self, channel: ChannelId, body: &[u8]) {
        let (generation, room) = match self.channels.get(channel) {
            Some(Channel::Open(open)) => (open.generation, Some((open.room.clone(), open.access))),
            _ => (0, None),
        };
        let request = match Request::decode(body) {
            Ok(request) => request,
            Err(err) => {
                let Some(id) = err.id() else {
                    return self.violation(CloseCode::ProtocolError);
                };
                let reply = Reply::refused(id, ChannelCode::BadRequest.as_u16(), err.to_string());
                let message = Message::Reply(reply.encode());
                self.out.push_back(if channel.is_control() {
                    ServerOutput::Control(message)
                } else {
                    ServerOutput::Send {
                        channel,
                        generation,
                        message,
                    }
                });
                return;
            }
        };
        self.out.push_back(ServerOutput::Request {
            channel,
            generation,
            room,
            request,
        });
    }

    /// The client sent CLOSE: reply once every write it sent on the channel before is durable
    /// and acknowledged (unless the CLOSE answers ours).
    fn on_client_close(&mut self, channel: ChannelId) {
        if self.reassembling(channel) {
            // §7: only the rest of the message may follow its first fragment.
            return self.violation(CloseCode::ProtocolError);
        }
        match self.channels.remove(channel) {
            Some(Channel::Open(open)) => {
                self.out.push_back(ServerOutput::CloseAfterWrites {
                    channel,
                    generation: open.generation,
                    room: open.room.clone(),
                });
                self.channels.insert(channel, Channel::Draining(open));
            }
            // The application has not answered the OPEN yet: its answer finds nothing to
            // open, and the client's CLOSE is answered at once.
            Some(Channel::Asked) => self.send_close(channel, ChannelCode::Normal),
            Some(draining @ Channel::Draining(_)) => {
                self.channels.insert(channel, draining);
            }
            Some(Channel::Closing) | None => {}
        }
    }

    /// Server-initiated close of an open channel: tell the client, leave the room, and ignore
    /// the channel until the client's CLOSE arrives. A draining channel already had the
    /// client's CLOSE: this CLOSE is the reply, and the channel is free.
    fn close_channel(&mut self, channel: ChannelId, code: ChannelCode) {
        match self.channels.remove(channel) {
            Some(Channel::Open(open)) => {
                let was_reassembling = open.unfinished.is_some();
                self.release(channel, open);
                self.send_close(channel, code);
                self.channels.insert(channel, Channel::Closing);
                if was_reassembling {
                    self.unfinished_changed();
                }
            }
            Some(Channel::Draining(open)) => {
                self.release(channel, open);
                self.send_close(channel, code);
            }
            Some(state @ (Channel::Closing | Channel::Asked)) => {
                self.channels.insert(channel, state);
            }
            None => {}
        }
    }

    fn release(&mut self, channel: ChannelId, open: OpenChannel<R>) {
        self.out.push_back(ServerOutput::Release {
            channel,
            room: open.room,
        });
    }

    /// Sends CLOSE on `channel`. Codes in the 44xx range are the client's errors and count
    /// against its budget; past it the connection is closed with 1008, after the CLOSEs
    /// already queued (§6.8).
    fn send_close(&mut self, channel: ChannelId, code: ChannelCode) {
        self.out
            .push_back(ServerOutput::CloseChannel { channel, code });
        if self.error_budget.spend(code, self.now) && !self.closed {
            self.close_connection(CloseCode::PolicyViolation, true);
        }
    }

    fn violation(&mut self, code: CloseCode) {
        self.close_connection(code, false);
    }

    fn close_connection(&mut self, code: CloseCode, after_queue: bool) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.timers = Timers::with_capacity(0);
        self.out
            .push_back(ServerOutput::CloseConnection { code, after_queue });
    }

    fn generation_of(&self, channel: ChannelId) -> Option<u64> {
        match self.channels.get(channel) {
            Some(Channel::Open(open) | Channel::Draining(open)) => Some(open.generation),
            _ => None,
        }
    }

    fn reassembling(&self, channel: ChannelId) -> bool {
        matches!(self.channels.get(channel), Some(Channel::Open(open)) if open.unfinished.is_some())
    }

    fn unfinished_bytes(&self) -> usize {
        self.channels
            .values()
            .map(|state| match state {
                Channel::Open(open) => open
                    .unfinished
                    .as_ref()
                    .map_or(0, |unfinished| unfinished.reassembler.buffered()),
                _ => 0,
            })
            .sum()
    }

    fn unfinished_changed(&mut self) {
        let bytes = self.unfinished_bytes();
        self.out.push_back(ServerOutput::Unfinished(bytes));
        self.arm_fragment_timer();
    }

    /// When the oldest unfinished message runs out of time.
    fn fragment_deadline(&self) -> Option<Instant> {
        self.channels
            .values()
            .filter_map(|state| match state {
                Channel::Open(open) => open
                    .unfinished
                    .as_ref()
                    .map(|unfinished| unfinished.started),
                _ => None,
            })
            .min()
            .map(|started| started + self.fragment_timeout)
    }

    fn arm_fragment_timer(&mut self) {
        if self.closed {
            return;
        }
        match self.fragment_deadline() {
            Some(at) => self.timers.set(Timer::Fragment, at),
            None => self.timers.cancel(&Timer::Fragment),
        }
    }
}
