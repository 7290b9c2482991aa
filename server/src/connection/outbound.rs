//! The sending half of a connection: a bounded queue of outgoing frames drained by one writer
//! task that owns the WebSocket sink, plus a small lane for connection control (WELCOME, PING,
//! PONG) that the writer serves first, so a heartbeat never waits behind a document's worth
//! of queued frames (docs/PROTOCOL.md §8.1). Anything that wants to reach the client (its own reader,
//! rooms fanning out, the storage writer acknowledging) goes through a [`ConnHandle`]. A client
//! that reads too slowly fills the queue and is closed with 4009 instead of being buffered
//! without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use parking_lot::Mutex;
use quire_protocol::fragment::encode_body_fragmented;
use quire_protocol::frame::kind;
use quire_protocol::{ChannelCode, ChannelId, CloseCode, ConnId, Frame, Message};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::lane::Lane;
use crate::metrics::Metrics;

/// Control frames waiting at most; a peer that floods PINGs loses the excess PONGs.
const CONTROL_QUEUE: usize = 64;

/// How long the writer keeps trying to deliver a Close frame to a peer that is not reading.
const CLOSE_DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// One queue entry: the frames of one message, written back to back.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Frames(Vec<Bytes>),
    /// Close the connection after everything queued before it.
    Close(CloseCode),
}

/// Events for the connection's reader, from elsewhere in the server.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// Storage failed for the writes of this channel's `generation`-th opening: close the
    /// channel with `code` if it is still that one.
    CloseChannel {
        channel: ChannelId,
        generation: u64,
        code: ChannelCode,
    },
    /// The connection is being closed (slow consumer, token expiry, protocol error).
    Killed,
}

#[derive(Debug)]
struct Shared {
    id: ConnId,
    frames: mpsc::Sender<Outgoing>,
    control: Lane<Bytes>,
    events: Lane<ConnEvent>,
    kill: Notify,
    kill_code: AtomicU16,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    max_frame_size: u32,
    metrics: Arc<Metrics>,
    /// Open document channels and the generation (which opening on this connection) of each.
    open_channels: Mutex<HashMap<ChannelId, u64>>,
}

/// A cheap, cloneable way to send to one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<Shared>);

/// The receiving end of a [`ConnHandle::queue_only`] handle.
#[derive(Debug)]
pub struct QueueOnly(ConnQueues);

impl QueueOnly {
    /// Takes every queued frame out (returning how many there were), as a writer would.
    pub fn drain(&mut self, handle: &ConnHandle) -> usize {
        let mut frames = 0;
        while let Ok(item) = self.0.frames.try_recv() {
            if let Outgoing::Frames(queued) = item {
                let len: usize = queued.iter().map(Bytes::len).sum();
                handle.0.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                frames += queued.len();
            }
        }
        frames
    }
}

/// The receiving ends, owned by the connection's tasks.
#[derive(Debug)]
pub(crate) struct ConnQueues {
    pub frames: mpsc::Receiver<Outgoing>,
}

impl ConnHandle {
    pub(crate) fn new(
        id: ConnId,
        queue_depth: usize,
        max_queued_bytes: usize,
        max_frame_size: u32,
        metrics: Arc<Metrics>,
    ) -> (Self, ConnQueues) {
        let (frames_tx, frames_rx) = mpsc::channel(queue_depth.max(1));
        let shared = Shared {
            id,
            frames: frames_tx,
            control: Lane::new(CONTROL_QUEUE),
            // Rare: a storage failure per channel, or the one kill.
            events: Lane::new(usize::MAX),
            kill: Notify::new(),
            kill_code: AtomicU16::new(0),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            max_frame_size,
            metrics,
            open_channels: Mutex::new(HashMap::new()),
        };
        (Self(Arc::new(shared)), ConnQueues { frames: frames_rx })
    }

    pub fn id(&self) -> ConnId {
        self.0.id
    }

    /// A handle whose frames only queue up, with no socket behind it: for measuring fan-out
    /// (`server/benches/`). Empty the queue with [`QueueOnly::drain`] before it fills.
    pub fn queue_only(id: ConnId, queue_depth: usize) -> (Self, QueueOnly) {
        let (handle, queues) = Self::new(
            id,
            queue_depth,
            usize::MAX,
            quire_protocol::Limits::DEFAULT_MAX_FRAME_SIZE,
            Arc::new(Metrics::default()),
        );
        (handle, QueueOnly(queues))
    }

    /// Queues a message on `channel`, fragmenting sync and awareness bodies larger than a
    /// frame. Returns false if the connection is gone or was just closed as a slow consumer.
    pub fn send(&self, channel: ChannelId, message: &Message) -> bool {
        if channel.is_control() {
            let frame = Bytes::from(Frame::new(channel, message.clone()).encode());
            return self.0.control.push(frame);
        }
        match message {
            Message::Sync(body) => self.send_body(channel, kind::SYNC, body),
            Message::Awareness(body) => self.send_body(channel, kind::AWARENESS, body),
            other => self.enqueue(vec![Bytes::from(
                Frame::new(channel, other.clone()).encode(),
            )]),
        }
    }

    /// Queues a sync or awareness body given by reference (fan-out copies it once per peer).
    pub fn send_body(&self, channel: ChannelId, body_kind: u8, body: &[u8]) -> bool {
        let mut frames = Vec::with_capacity(1);
        encode_body_fragmented(channel, body_kind, body, self.0.max_frame_size, |f| {
            frames.push(Bytes::from(f))
        });
        self.enqueue(frames)
    }

    fn enqueue(&self, frames: Vec<Bytes>) -> bool {
        let len: usize = frames.iter().map(Bytes::len).sum();
        let queued = self.0.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // One message larger than the byte bound may pass when nothing else waits, so that a
        // large document can still be sent to a client that keeps up.
        if queued > 0 && queued + len > self.0.max_queued_bytes {
            self.0.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.kill(CloseCode::SlowConsumer);
            return false;
        }
        match self.0.frames.try_send(Outgoing::Frames(frames)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.0.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.kill(CloseCode::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.0.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    /// `channel` was opened as this connection's `generation`-th channel: ACKs for its writes
    /// go out from now on.
    pub(crate) fn channel_opened(&self, channel: ChannelId, generation: u64) {
        self.0.open_channels.lock().insert(channel, generation);
    }

    /// `channel` is released: ACKs still pending for its writes are dropped. Call before
    /// queueing the CLOSE, so that every ACK sent for the channel precedes it.
    pub(crate) fn channel_released(&self, channel: ChannelId) {
        self.0.open_channels.lock().remove(&channel);
    }

    /// Queues `ACK(seq)` on `channel` if it is still the `generation`-th opening that received
    /// those writes. An ACK for a released channel must not reach a later channel on the same
    /// ID: it would acknowledge writes the new channel never sent (§6.5).
    pub fn send_ack(&self, channel: ChannelId, generation: u64, seq: u64) -> bool {
        let open = self.0.open_channels.lock();
        open.get(&channel) == Some(&generation) && self.send(channel, &Message::Ack(seq))
    }

    /// Closes the connection with `code` after the frames already queued (graceful). Falls
    /// back to an immediate close if the queue is full.
    pub fn close_after_queue(&self, code: CloseCode) {
        if self.0.frames.try_send(Outgoing::Close(code)).is_err() {
            self.kill(code);
        }
    }

    /// Closes the connection now with `code`, dropping whatever is queued. The first code wins.
    pub fn kill(&self, code: CloseCode) {
        if self
            .0
            .kill_code
            .compare_exchange(0, code.as_u16(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.0.kill.notify_one();
            self.0.events.push(ConnEvent::Killed);
        }
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
}

/// Drains the queue into the sink until a close, then sends the Close frame. Returns the code
/// the connection was closed with.
pub(crate) async fn run_writer<S>(
    handle: ConnHandle,
    mut queue: mpsc::Receiver<Outgoing>,
    mut sink: S,
) -> CloseCode
where
    S: Sink<WsMessage> + Unpin,
{
    let shared = handle.0.clone();
    let code = loop {
        let (first_control, item) = tokio::select! {
            biased;
            _ = shared.kill.notified() => break handle.kill_code().unwrap_or(CloseCode::InternalError),
            frame = shared.control.pop() => (Some(frame), queue.try_recv().ok()),
            item = queue.recv() => match item {
                Some(item) => (None, Some(item)),
                None => break CloseCode::Normal,
            },
        };
        let write = async {
            if let Some(frame) = first_control {
                write_control(&shared, &mut sink, frame).await?;
            }
            let mut next = item;
            let mut written = 0usize;
            while let Some(item) = next.take() {
                // Control frames go ahead of whatever document traffic is queued.
                while let Some(frame) = shared.control.try_pop() {
                    write_control(&shared, &mut sink, frame).await?;
                }
                match item {
                    Outgoing::Frames(frames) => {
                        for frame in frames {
                            let len = frame.len();
                            shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                            shared.metrics.frames_out.fetch_add(1, Ordering::Relaxed);
                            shared
                                .metrics
                                .bytes_out
                                .fetch_add(len as u64, Ordering::Relaxed);
                            sink.feed(WsMessage::Binary(frame))
                                .await
                                .map_err(|_| None)?;
                        }
                    }
                    Outgoing::Close(code) => {
                        sink.flush().await.map_err(|_| None)?;
                        return Err(Some(code));
                    }
                }
                written += 1;
                // Batch what is already waiting into one flush (one syscall, one TLS record run).
                if written < 256 {
                    next = queue.try_recv().ok();
                }
            }
            sink.flush().await.map_err(|_| None)
        };
        let result = tokio::select! {
            biased;
            _ = shared.kill.notified() => Err(Some(handle.kill_code().unwrap_or(CloseCode::InternalError))),
            result = write => result,
        };
        match result {
            Ok(()) => {}
            Err(Some(code)) => break code,
            // The socket failed: nobody is left to read a Close frame.
            Err(None) => return CloseCode::Abnormal,
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

/// Feeds one control frame (not counted in the queued bytes: it never was in the queue).
async fn write_control<S>(
    shared: &Shared,
    sink: &mut S,
    frame: Bytes,
) -> Result<(), Option<CloseCode>>
where
    S: Sink<WsMessage> + Unpin,
{
    shared.metrics.frames_out.fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .bytes_out
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    sink.feed(WsMessage::Binary(frame)).await.map_err(|_| None)
}
