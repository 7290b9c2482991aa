//! The sending half of a connection: a [`Schedule`] of outgoing frames drained by one writer
//! task that owns the WebSocket sink. Anything that wants to reach the client (its own reader,
//! a document's task relaying or answering, the storage writer acknowledging) goes through a
//! [`ConnHandle`]; none of them ever waits for the socket. A client that reads too slowly fills
//! the schedule's bounds and is closed with 4009 instead of being buffered without bound: the
//! Close frame then goes out ahead of everything still queued.

mod schedule;

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use parking_lot::Mutex;
use quire_protocol::frame::kind;
use quire_protocol::{ChannelCode, ChannelId, CloseCode, ConnId, Frame, Message};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use self::schedule::{Out, Refused, Schedule};
use crate::lane::Lane;
use crate::memory::{Charge, Holder, Holding, MemoryBudget, Use};
use crate::metrics::Metrics;

/// Control frames waiting at most; a peer that floods PINGs loses the excess PONGs.
const CONTROL_QUEUE: usize = 64;

/// How long the writer keeps trying to deliver a Close frame to a peer that is not reading.
const CLOSE_DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes a connection's reader handles, or its writer writes, before it lets the runtime's
/// other tasks run.
pub(crate) const YIELD_BYTES: usize = 64 * 1024;

/// Frames written per flush at most, and bytes: small frames share one syscall (and one TLS
/// record run), while a PONG never waits behind more than this much of a large transfer.
/// While the socket is full, a batch waits in the WebSocket layer's buffer and in TLS: for a
/// client that stopped reading, that is memory outside its queue, so a batch is kept small.
const BATCH_FRAMES: usize = 256;
const BATCH_BYTES: usize = 64 * 1024;

/// Events for the connection's reader, from elsewhere in the server.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// Close the channel with `code` if it is still its `generation`-th opening: its document
    /// refused an update, or storage failed for its writes.
    CloseChannel {
        channel: ChannelId,
        generation: u64,
        code: ChannelCode,
    },
    /// The document could not be opened: refuse the OPEN with `code` (no OPENED was sent).
    OpenFailed {
        channel: ChannelId,
        generation: u64,
        code: ChannelCode,
    },
    /// Every write received on the channel before the client's CLOSE is durable and
    /// acknowledged: reply to the CLOSE.
    Drained { channel: ChannelId, generation: u64 },
    /// The connection is being closed (slow consumer, token expiry, protocol error).
    Killed,
}

#[derive(Debug)]
struct Outbox {
    schedule: Schedule,
    /// Close with this code once everything queued is written (graceful close).
    close_after: Option<CloseCode>,
}

#[derive(Debug)]
struct Shared {
    id: ConnId,
    outbox: Mutex<Outbox>,
    /// Something was queued, or a close was asked for.
    wake: Notify,
    events: Lane<ConnEvent>,
    kill: Notify,
    kill_code: AtomicU16,
    metrics: Arc<Metrics>,
    memory: Arc<MemoryBudget>,
    /// This connection's entry among the memory budget's holders.
    holder_id: AtomicU64,
    /// The connection's unfinished fragmented messages, kept up to date by its reader.
    unfinished: Mutex<Charge>,
    /// What the writer took off the schedule and has not yet got through to the socket: its
    /// frames are copies of queued bodies, held (with the WebSocket layer's and TLS's copies
    /// of them) until the socket takes them.
    in_flight: Mutex<Charge>,
}

/// A batch the socket has not taken is held three times: the writer's frames, the WebSocket
/// layer's buffer of them, and TLS's encrypted records (measured: 200 blocked connections
/// held about 40 MiB beyond their 12.5 MiB of batches).
const IN_FLIGHT_COPIES: u64 = 3;

impl Shared {
    /// See [`ConnHandle::kill`].
    fn kill(&self, code: CloseCode) -> bool {
        let first = self
            .kill_code
            .compare_exchange(0, code.as_u16(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            // Nothing queued will be written: give it back now.
            self.outbox.lock().schedule.drop_all();
            self.kill.notify_one();
            self.events.push(ConnEvent::Killed);
        }
        first
    }
}

impl Holder for Shared {
    fn holding(&self) -> Holding {
        Holding {
            output: self.outbox.lock().schedule.queued_bytes() as u64
                + self.in_flight.lock().bytes(),
            unfinished: self.unfinished.lock().bytes(),
        }
    }

    fn evict(&self, code: CloseCode) -> bool {
        self.kill(code)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.memory
            .unregister(self.holder_id.load(Ordering::Relaxed));
    }
}

/// A cheap, cloneable way to send to one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<Shared>);

/// The frames queued on a [`ConnHandle::queue_only`] handle, for measuring fan-out.
#[derive(Debug)]
pub struct QueueOnly(());

impl QueueOnly {
    /// Takes every queued frame out (returning how many there were), as a writer would.
    pub fn drain(&mut self, handle: &ConnHandle) -> usize {
        let mut outbox = handle.0.outbox.lock();
        std::iter::from_fn(|| outbox.schedule.next_frame()).count()
    }
}

impl ConnHandle {
    pub(crate) fn new(
        id: ConnId,
        queue_depth: usize,
        max_queued_bytes: usize,
        max_frame_size: u32,
        metrics: Arc<Metrics>,
        memory: Arc<MemoryBudget>,
    ) -> Self {
        let schedule = Schedule::new(queue_depth, max_queued_bytes, CONTROL_QUEUE, max_frame_size);
        let shared = Arc::new(Shared {
            id,
            outbox: Mutex::new(Outbox {
                schedule,
                close_after: None,
            }),
            wake: Notify::new(),
            // Rare: a closed channel or a drained one, or the one kill.
            events: Lane::new(),
            kill: Notify::new(),
            kill_code: AtomicU16::new(0),
            metrics,
            holder_id: AtomicU64::new(0),
            unfinished: Mutex::new(memory.charge(Use::Unfinished, 0)),
            in_flight: Mutex::new(memory.charge(Use::Output, 0)),
            memory,
        });
        let holder: Weak<dyn Holder> = Arc::downgrade(&shared) as Weak<dyn Holder>;
        let id = shared.memory.register(holder);
        shared.holder_id.store(id, Ordering::Relaxed);
        Self(shared)
    }

    /// Charges the bytes of this connection's unfinished fragmented messages to the memory
    /// budget, which also ranks the connection by them.
    pub(crate) fn set_unfinished(&self, bytes: u64) {
        self.0.unfinished.lock().set(bytes);
    }

    pub fn id(&self) -> ConnId {
        self.0.id
    }

    /// A handle whose frames only queue up, with no socket behind it: for measuring fan-out
    /// (`server/benches/`). Empty the queue with [`QueueOnly::drain`] before it fills.
    pub fn queue_only(id: ConnId, queue_depth: usize) -> (Self, QueueOnly) {
        let handle = Self::new(
            id,
            queue_depth,
            usize::MAX,
            quire_protocol::Limits::DEFAULT_MAX_FRAME_SIZE,
            Arc::new(Metrics::default()),
            MemoryBudget::unlimited(),
        );
        (handle, QueueOnly(()))
    }

    /// Queues a connection control message (WELCOME, PING, PONG) ahead of everything else.
    pub fn send_control(&self, message: &Message) -> bool {
        let frame = Bytes::from(Frame::control(message.clone()).encode());
        let queued = self.0.outbox.lock().schedule.push_control(frame);
        self.0.wake.notify_one();
        queued
    }

    /// Queues a message on `channel` if it is still its `generation`-th opening; SYNC and
    /// AWARENESS bodies are fragmented as they are written. Returns false if it was dropped
    /// (the channel was released) or the connection was just closed as a slow consumer.
    /// Bodies are taken over, not copied: a large step 2 is queued as it was encoded.
    pub fn send(&self, channel: ChannelId, generation: u64, message: Message) -> bool {
        let out = match message {
            Message::Sync(body) => Out::Body {
                kind: kind::SYNC,
                body: self.0.memory.output_bytes(body),
                offset: 0,
            },
            Message::Awareness(body) => Out::Body {
                kind: kind::AWARENESS,
                body: self.0.memory.output_bytes(body),
                offset: 0,
            },
            // A reply may carry a whole version's content.
            Message::Reply(body) => Out::Body {
                kind: kind::REPLY,
                body: self.0.memory.output_bytes(body),
                offset: 0,
            },
            other => Out::Frame(Bytes::from(Frame::new(channel, other).encode())),
        };
        self.push(channel, generation, out)
    }

    /// Queues a shared SYNC or AWARENESS body: relays encode a body once and every
    /// subscriber's queue holds the same bytes.
    pub fn send_body(
        &self,
        channel: ChannelId,
        generation: u64,
        body_kind: u8,
        body: Bytes,
    ) -> bool {
        let out = Out::Body {
            kind: body_kind,
            body,
            offset: 0,
        };
        self.push(channel, generation, out)
    }

    fn push(&self, channel: ChannelId, generation: u64, out: Out) -> bool {
        let result = self
            .0
            .outbox
            .lock()
            .schedule
            .push_data(channel, generation, out);
        match result {
            Ok(()) => {
                self.0.wake.notify_one();
                true
            }
            Err(Refused::NotOpen) => false,
            Err(Refused::Full) => {
                if self.kill(CloseCode::SlowConsumer) {
                    self.0
                        .metrics
                        .slow_consumers
                        .fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// `channel` was opened as this connection's `generation`-th channel: traffic and ACKs
    /// for that opening go out from now on.
    pub fn channel_opened(&self, channel: ChannelId, generation: u64) {
        self.0
            .outbox
            .lock()
            .schedule
            .open_channel(channel, generation);
    }

    /// Sends CLOSE on `channel`, releasing it if it was open: its queued traffic is dropped
    /// and nothing more goes out for that opening, but ACKs queued before still precede the
    /// CLOSE. Also answers channels that were never opened (refusals, 4404).
    pub(crate) fn send_close(&self, channel: ChannelId, code: ChannelCode) {
        let close = Message::Close {
            code: code.as_u16(),
            reason: code.description().to_owned(),
        };
        let frame = Bytes::from(Frame::new(channel, close).encode());
        self.0.outbox.lock().schedule.close_channel(channel, frame);
        self.0.wake.notify_one();
    }

    /// Queues `ACK(seq)` on `channel` if it is still the `generation`-th opening that received
    /// those writes. An ACK for a released channel must not reach a later channel on the same
    /// ID: it would acknowledge writes the new channel never sent (§6.5).
    pub fn send_ack(&self, channel: ChannelId, generation: u64, seq: u64) -> bool {
        let frame = Bytes::from(Frame::new(channel, Message::Ack(seq)).encode());
        let queued = self
            .0
            .outbox
            .lock()
            .schedule
            .push_channel_control(channel, generation, frame)
            .is_ok();
        self.0.wake.notify_one();
        queued
    }

    /// Closes the connection with `code` after the frames already queued (graceful).
    pub fn close_after_queue(&self, code: CloseCode) {
        self.0.outbox.lock().close_after.get_or_insert(code);
        self.0.wake.notify_one();
    }

    /// Closes the connection now with `code`: the Close frame goes out ahead of whatever is
    /// queued, which is dropped. The first code wins: returns whether it was this one.
    pub fn kill(&self, code: CloseCode) -> bool {
        self.0.kill(code)
    }

    /// The code the connection was killed with, if it was.
    pub fn kill_code(&self) -> Option<CloseCode> {
        match self.0.kill_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(CloseCode::from_u16(code)),
        }
    }

    pub(crate) fn event(&self, event: ConnEvent) {
        self.0.events.push(event);
    }

    /// The next event for the connection's reader.
    pub(crate) async fn next_event(&self) -> ConnEvent {
        self.0.events.pop().await
    }

    /// Takes the next batch of frames to write, or the code to close with once nothing is
    /// left, or nothing for now.
    fn take_batch(&self, batch: &mut Vec<Bytes>) -> Option<CloseCode> {
        let mut outbox = self.0.outbox.lock();
        let mut bytes = 0;
        while batch.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
            let Some(frame) = outbox.schedule.next_frame() else {
                break;
            };
            bytes += frame.len();
            batch.push(frame);
        }
        if batch.is_empty() {
            outbox.close_after
        } else {
            None
        }
    }
}

/// Writes the schedule into the sink until a close, then sends the Close frame. Returns the
/// code the connection was closed with.
pub(crate) async fn run_writer<S>(handle: ConnHandle, mut sink: S) -> CloseCode
where
    S: Sink<WsMessage> + Unpin,
{
    let shared = handle.0.clone();
    let mut batch = Vec::new();
    // Bytes written since the writer last let other tasks run.
    let mut unyielded = 0;
    let code = loop {
        if let Some(code) = handle.kill_code() {
            break code;
        }
        if let Some(code) = handle.take_batch(&mut batch) {
            break code;
        }
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = shared.kill.notified() => {}
                _ = shared.wake.notified() => {}
            }
            continue;
        }
        let batch_bytes = batch.iter().map(Bytes::len).sum::<usize>();
        unyielded += batch_bytes;
        shared
            .in_flight
            .lock()
            .set(batch_bytes as u64 * IN_FLIGHT_COPIES);
        let write = async {
            for frame in batch.drain(..) {
                shared.metrics.frames_out.fetch_add(1, Ordering::Relaxed);
                shared
                    .metrics
                    .bytes_out
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                sink.feed(WsMessage::Binary(frame)).await?;
            }
            sink.flush().await
        };
        let failed = tokio::select! {
            biased;
            _ = shared.kill.notified() => continue,
            written = write => written.is_err(),
        };
        shared.in_flight.lock().set(0);
        if failed {
            // The socket failed: nobody is left to read a Close frame.
            return CloseCode::Abnormal;
        }
        // A socket with room never makes the writer wait: let the runtime's other tasks run
        // once a large transfer has had its share (see the reader's `yield_after`).
        if unyielded >= YIELD_BYTES {
            unyielded = 0;
            tokio::task::yield_now().await;
        }
    };
    let frame = CloseFrame {
        code: WsCode::from(code.as_u16()),
        reason: code.description().into(),
    };
    let _ = tokio::time::timeout(CLOSE_DELIVERY_TIMEOUT, async {
        let _ = sink.send(WsMessage::Close(Some(frame))).await;
        let _ = sink.close().await;
    })
    .await;
    code
}
