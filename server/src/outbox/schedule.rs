//! What waits to be written to one connection, and in which order.
//!
//! - Connection control (WELCOME, PING, PONG) goes first, always.
//! - Then channel control (ACK, CLOSE): a channel's control frames go ahead of its queued
//!   document traffic and ahead of other channels' traffic, except inside a fragmented message
//!   the channel has begun, which §7 forbids interrupting on that channel.
//! - Then document traffic, one frame per channel in turn: a 20 MB step 2 on one channel is
//!   written a frame at a time between the other channels' small updates, never as a block.
//!
//! Bodies are shared `Bytes`: a relayed update is encoded once and every subscriber's queue
//! holds the same bytes; each frame is cut from it only when it is about to be written.
//!
//! The schedule also knows which channels are open, and at which generation (which opening on
//! the connection), so that traffic for a channel that was closed, or closed and opened again,
//! never goes out under the new channel's ID. Releasing a channel drops its queued traffic.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use quire_protocol::fragment::encode_piece;
use quire_protocol::{ChannelId, ChannelMap};

/// One queued document message.
#[derive(Debug)]
pub(crate) enum Out {
    /// A frame encoded whole (OPENED, or a small message).
    Frame(Bytes),
    /// A SYNC or AWARENESS body, fragmented as it is written; `offset` is where the next piece
    /// starts (non-zero once its first piece is out).
    Body {
        kind: u8,
        body: Bytes,
        offset: usize,
    },
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Frame(frame) => frame.len(),
            Out::Body { body, .. } => body.len(),
        }
    }
}

#[derive(Debug, Default)]
struct ChannelQueue {
    /// ACK and CLOSE frames.
    control: VecDeque<Bytes>,
    /// Document traffic; the front may be a body partly written.
    data: VecDeque<Out>,
    in_ready: bool,
    in_urgent: bool,
}

impl ChannelQueue {
    /// Whether the front message has begun going out in pieces.
    fn mid_message(&self) -> bool {
        matches!(self.data.front(), Some(Out::Body { offset, .. }) if *offset > 0)
    }

    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty()
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The channel is not open at that generation: the message is dropped, nothing is wrong.
    NotOpen,
    /// The queue is over its bounds: the connection is a slow consumer.
    Full,
}

#[derive(Debug)]
pub(crate) struct Schedule {
    control: VecDeque<Bytes>,
    channels: HashMap<ChannelId, ChannelQueue>,
    /// Channels with control frames waiting, in arrival order.
    urgent: VecDeque<ChannelId>,
    /// Channels with document traffic waiting, in turn.
    ready: VecDeque<ChannelId>,
    /// Open channels and the generation of each.
    open: ChannelMap<u64>,
    queued_bytes: usize,
    queued_messages: usize,
    max_messages: usize,
    max_bytes: usize,
    max_control: usize,
    max_frame_size: u32,
}

impl Schedule {
    pub(crate) fn new(
        max_messages: usize,
        max_bytes: usize,
        max_control: usize,
        max_frame_size: u32,
    ) -> Self {
        Self {
            control: VecDeque::new(),
            channels: HashMap::new(),
            urgent: VecDeque::new(),
            ready: VecDeque::new(),
            open: ChannelMap::new(),
            queued_bytes: 0,
            queued_messages: 0,
            max_messages: max_messages.max(1),
            max_bytes,
            max_control,
            max_frame_size,
        }
    }

    /// Queues a connection control frame; false (dropped) past its small bound: a peer that
    /// floods PINGs loses the excess PONGs.
    pub(crate) fn push_control(&mut self, frame: Bytes) -> bool {
        if self.control.len() >= self.max_control {
            return false;
        }
        self.control.push_back(frame);
        true
    }

    pub(crate) fn open_channel(&mut self, channel: ChannelId, generation: u64) {
        self.open.insert(channel, generation);
    }

    pub(crate) fn is_open(&self, channel: ChannelId, generation: u64) -> bool {
        self.open.get(channel) == Some(&generation)
    }

    /// Queues document traffic for `channel`'s `generation`-th opening.
    pub(crate) fn push_data(
        &mut self,
        channel: ChannelId,
        generation: u64,
        out: Out,
    ) -> Result<(), Refused> {
        if !self.is_open(channel, generation) {
            return Err(Refused::NotOpen);
        }
        let len = out.len();
        // One message larger than the byte bound may pass when nothing else waits, so that a
        // large document can still be sent to a client that keeps up.
        if self.queued_messages >= self.max_messages
            || (self.queued_bytes > 0 && self.queued_bytes + len > self.max_bytes)
        {
            return Err(Refused::Full);
        }
        self.queued_bytes += len;
        self.queued_messages += 1;
        let queue = self.channels.entry(channel).or_default();
        queue.data.push_back(out);
        if !queue.in_ready {
            queue.in_ready = true;
            self.ready.push_back(channel);
        }
        Ok(())
    }

    /// Queues an ACK (or another channel control frame) for an open channel.
    pub(crate) fn push_channel_control(
        &mut self,
        channel: ChannelId,
        generation: u64,
        frame: Bytes,
    ) -> Result<(), Refused> {
        if !self.is_open(channel, generation) {
            return Err(Refused::NotOpen);
        }
        self.queue_channel_control(channel, frame);
        Ok(())
    }

    /// Releases `channel` (if open) and queues its CLOSE frame: queued traffic that has not
    /// begun is dropped, a message already part-way out is finished first (§7), and control
    /// frames queued before (its ACKs) still go ahead of the CLOSE.
    pub(crate) fn close_channel(&mut self, channel: ChannelId, close: Bytes) {
        self.open.remove(channel);
        if let Some(queue) = self.channels.get_mut(&channel) {
            let keep = usize::from(queue.mid_message());
            for out in queue.data.drain(keep..) {
                self.queued_bytes -= out.len();
                self.queued_messages -= 1;
            }
        }
        self.queue_channel_control(channel, close);
    }

    fn queue_channel_control(&mut self, channel: ChannelId, frame: Bytes) {
        let queue = self.channels.entry(channel).or_default();
        queue.control.push_back(frame);
        if !queue.in_urgent {
            queue.in_urgent = true;
            self.urgent.push_back(channel);
        }
    }

    /// Whether nothing at all waits.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.urgent.is_empty() && self.ready.is_empty()
    }

    /// Bytes of document traffic queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Drops everything queued (the connection is being closed at once): what it held is
    /// given back now, not when the connection's last handle goes.
    pub(crate) fn drop_all(&mut self) {
        self.control.clear();
        self.channels.clear();
        self.urgent.clear();
        self.ready.clear();
        self.queued_bytes = 0;
        self.queued_messages = 0;
    }

    /// The next frame to write, in the order the module doc gives.
    pub(crate) fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        if let Some(frame) = self.next_channel_control() {
            return Some(frame);
        }
        self.next_data()
    }

    fn next_channel_control(&mut self) -> Option<Bytes> {
        // Channels in the middle of a message keep their control frames until it ends; they
        // stay in `urgent` behind the others.
        for _ in 0..self.urgent.len() {
            let channel = self.urgent.pop_front()?;
            let Some(queue) = self.channels.get_mut(&channel) else {
                continue;
            };
            if queue.mid_message() {
                self.urgent.push_back(channel);
                continue;
            }
            let frame = queue.control.pop_front();
            if queue.control.is_empty() {
                queue.in_urgent = false;
            } else {
                self.urgent.push_back(channel);
            }
            self.forget_if_idle(channel);
            if frame.is_some() {
                return frame;
            }
        }
        None
    }

    fn next_data(&mut self) -> Option<Bytes> {
        while let Some(channel) = self.ready.pop_front() {
            let Some(queue) = self.channels.get_mut(&channel) else {
                continue;
            };
            let Some(out) = queue.data.front_mut() else {
                queue.in_ready = false;
                self.forget_if_idle(channel);
                continue;
            };
            let (frame, done) = match out {
                Out::Frame(frame) => (frame.clone(), true),
                Out::Body { kind, body, offset } => {
                    let (frame, next) =
                        encode_piece(channel, *kind, body, *offset, self.max_frame_size);
                    match next {
                        Some(next) => {
                            *offset = next;
                            (Bytes::from(frame), false)
                        }
                        None => (Bytes::from(frame), true),
                    }
                }
            };
            if done {
                if let Some(out) = queue.data.pop_front() {
                    self.queued_bytes -= out.len();
                    self.queued_messages -= 1;
                }
            }
            if queue.data.is_empty() {
                queue.in_ready = false;
            } else {
                self.ready.push_back(channel);
            }
            self.forget_if_idle(channel);
            return Some(frame);
        }
        None
    }

    /// Drops a channel's queue once nothing waits in it, so an idle connection holds no map
    /// entries (docs/BENCHMARKS.md, S5).
    fn forget_if_idle(&mut self, channel: ChannelId) {
        if self
            .channels
            .get(&channel)
            .is_some_and(|q| q.is_empty() && !q.in_ready && !q.in_urgent)
        {
            self.channels.remove(&channel);
            if self.channels.is_empty() {
                // An idle connection keeps no buckets either (S5).
                self.channels = HashMap::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quire_protocol::frame::kind;
    use quire_protocol::{Frame, Limits, Message};

    use super::*;

    const FRAME: u32 = 1024;

    fn schedule() -> Schedule {
        Schedule::new(100, 1 << 20, 8, FRAME)
    }

    fn frame(channel: u32, message: Message) -> Bytes {
        Bytes::from(Frame::new(ChannelId(channel), message).encode())
    }

    fn body(kind: u8, len: usize) -> Out {
        Out::Body {
            kind,
            body: Bytes::from(vec![7; len]),
            offset: 0,
        }
    }

    /// (channel, kind) of every frame, in write order.
    fn drain(schedule: &mut Schedule) -> Vec<(u32, u8)> {
        let limits = Limits {
            max_frame_size: FRAME,
            ..Limits::default()
        };
        std::iter::from_fn(|| schedule.next_frame())
            .map(|bytes| {
                let frame = Frame::decode(&bytes, &limits).expect("a valid frame");
                (frame.channel.0, frame.message.kind())
            })
            .collect()
    }

    #[test]
    fn a_big_message_is_interleaved_with_other_channels() {
        let mut s = schedule();
        s.open_channel(ChannelId(1), 1);
        s.open_channel(ChannelId(2), 2);
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 3 * FRAME as usize))
            .unwrap();
        s.push_data(ChannelId(2), 2, body(kind::SYNC, 10)).unwrap();
        s.push_data(ChannelId(2), 2, body(kind::SYNC, 10)).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![
                (1, kind::FRAGMENT),
                (2, kind::SYNC),
                (1, kind::FRAGMENT),
                (2, kind::SYNC),
                (1, kind::FRAGMENT),
                (1, kind::SYNC),
            ]
        );
        assert!(s.is_empty());
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn control_goes_first_but_never_inside_its_own_channels_message() {
        let mut s = schedule();
        s.open_channel(ChannelId(1), 1);
        s.open_channel(ChannelId(2), 2);
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 2 * FRAME as usize))
            .unwrap();
        s.push_data(ChannelId(2), 2, body(kind::SYNC, 10)).unwrap();
        assert_eq!(drain_one(&mut s), (1, kind::FRAGMENT));
        // Channel 1 is mid-message: its ACK waits for the message's last piece; channel 2's ACK
        // and the PONG do not wait for anything.
        s.push_channel_control(ChannelId(1), 1, frame(1, Message::Ack(1)))
            .unwrap();
        s.push_channel_control(ChannelId(2), 2, frame(2, Message::Ack(4)))
            .unwrap();
        assert!(s.push_control(frame(0, Message::Pong(9))));
        assert_eq!(
            drain(&mut s),
            vec![
                (0, kind::PONG),
                (2, kind::ACK),
                (2, kind::SYNC),
                (1, kind::FRAGMENT),
                (1, kind::SYNC),
                (1, kind::ACK),
            ]
        );
    }

    fn drain_one(s: &mut Schedule) -> (u32, u8) {
        let bytes = s.next_frame().expect("a frame");
        let frame = Frame::decode(
            &bytes,
            &Limits {
                max_frame_size: FRAME,
                ..Limits::default()
            },
        )
        .unwrap();
        (frame.channel.0, frame.message.kind())
    }

    #[test]
    fn closing_drops_unstarted_traffic_and_keeps_acks_ahead_of_the_close() {
        let mut s = schedule();
        s.open_channel(ChannelId(1), 1);
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)).unwrap();
        s.push_channel_control(ChannelId(1), 1, frame(1, Message::Ack(2)))
            .unwrap();
        let close = Message::Close {
            code: 1000,
            reason: String::new(),
        };
        s.close_channel(ChannelId(1), frame(1, close));
        assert_eq!(drain(&mut s), vec![(1, kind::ACK), (1, kind::CLOSE)]);
        assert_eq!(s.queued_bytes(), 0);
        assert!(s.channels.is_empty(), "nothing kept for an idle channel");
    }

    #[test]
    fn a_message_part_way_out_is_finished_before_the_close() {
        let mut s = schedule();
        s.open_channel(ChannelId(1), 1);
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 2 * FRAME as usize))
            .unwrap();
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)).unwrap();
        assert_eq!(drain_one(&mut s), (1, kind::FRAGMENT));
        let close = Message::Close {
            code: 4500,
            reason: String::new(),
        };
        s.close_channel(ChannelId(1), frame(1, close));
        assert_eq!(
            drain(&mut s),
            vec![(1, kind::FRAGMENT), (1, kind::SYNC), (1, kind::CLOSE)]
        );
    }

    #[test]
    fn traffic_for_another_generation_is_dropped() {
        let mut s = schedule();
        s.open_channel(ChannelId(1), 1);
        s.close_channel(ChannelId(1), frame(1, Message::Ack(0)));
        s.open_channel(ChannelId(1), 2);
        assert_eq!(
            s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)),
            Err(Refused::NotOpen)
        );
        assert_eq!(
            s.push_channel_control(ChannelId(1), 1, frame(1, Message::Ack(1))),
            Err(Refused::NotOpen)
        );
        s.push_data(ChannelId(1), 2, body(kind::SYNC, 10)).unwrap();
    }

    #[test]
    fn bounds_refuse_with_full() {
        let mut s = Schedule::new(2, 100, 1, FRAME);
        s.open_channel(ChannelId(1), 1);
        // One message over the byte bound passes when nothing waits.
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 500)).unwrap();
        assert_eq!(
            s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)),
            Err(Refused::Full)
        );
        drain(&mut s);
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)).unwrap();
        s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)).unwrap();
        assert_eq!(
            s.push_data(ChannelId(1), 1, body(kind::SYNC, 10)),
            Err(Refused::Full),
            "message count bound"
        );
        assert!(s.push_control(frame(0, Message::Ping(1))));
        assert!(!s.push_control(frame(0, Message::Ping(2))), "control bound");
    }
}
