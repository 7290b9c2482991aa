//! Fragmentation: a sync or awareness message larger than one frame travels as `Fragment`
//! frames followed by one frame of the message's real kind holding the last piece. Keeping
//! every frame small lets heartbeats and other channels' frames pass between the pieces, so a
//! large transfer never starves the connection or trips a heartbeat.

use crate::error::FrameError;
use crate::frame::{kind, write_frame_header, Message, MAX_HEADER_LEN};
use crate::id::ChannelId;

/// The smallest frame size the encoder can honour: the longest header and one byte of body.
/// Smaller values of `max_frame_size` are raised to this.
pub const MIN_ENCODABLE_FRAME_SIZE: u32 = MAX_HEADER_LEN as u32 + 1;

/// Encodes `message` (sync or awareness) on `channel` as one or more frames no larger than
/// `max_frame_size`, calling `emit` for each in order. Other kinds are always one frame.
///
/// `max_frame_size` must be at least [`Limits::MIN_FRAME_SIZE`], the least a server may
/// announce (`Frame::decode` refuses a `WELCOME` announcing less), so a value taken from a
/// `WELCOME` or a valid server configuration always qualifies. Smaller values are honoured
/// down to [`MIN_ENCODABLE_FRAME_SIZE`] (tests and the spec's fragmentation example use them);
/// below that the size is clamped up to it, as no smaller frame can carry any body.
///
/// [`Limits::MIN_FRAME_SIZE`]: crate::limits::Limits::MIN_FRAME_SIZE
pub fn encode_fragmented(
    channel: ChannelId,
    message: &Message,
    max_frame_size: u32,
    mut emit: impl FnMut(Vec<u8>),
) {
    match message {
        Message::Sync(body) => {
            encode_body_fragmented(channel, kind::SYNC, body, max_frame_size, emit)
        }
        Message::Awareness(body) => {
            encode_body_fragmented(channel, kind::AWARENESS, body, max_frame_size, emit)
        }
        other => emit(crate::frame::Frame::new(channel, other.clone()).encode()),
    }
}

/// Like [`encode_fragmented`], from a borrowed body of the given kind (`SYNC` or
/// `AWARENESS`), so a sender relaying one body to many channels copies it once per frame.
/// The same contract on `max_frame_size` applies.
pub fn encode_body_fragmented(
    channel: ChannelId,
    last_kind: u8,
    body: &[u8],
    max_frame_size: u32,
    mut emit: impl FnMut(Vec<u8>),
) {
    let mut offset = 0;
    loop {
        let (frame, next) = encode_piece(channel, last_kind, body, offset, max_frame_size);
        emit(frame);
        match next {
            Some(next) => offset = next,
            None => return,
        }
    }
}

/// One frame of a body's fragmented encoding: the piece that starts at `offset` (0 for the
/// first), and the offset of the next piece, or `None` when this frame was the last. A writer
/// that holds one shared body for many channels produces each frame only when it is about to
/// write it, and may write other channels' frames between two pieces (§7). Calling it from 0
/// until it returns `None` gives exactly the frames of [`encode_body_fragmented`].
pub fn encode_piece(
    channel: ChannelId,
    last_kind: u8,
    body: &[u8],
    offset: usize,
    max_frame_size: u32,
) -> (Vec<u8>, Option<usize>) {
    let piece_len = max_frame_size.max(MIN_ENCODABLE_FRAME_SIZE) as usize - MAX_HEADER_LEN;
    let end = body.len().min(offset.saturating_add(piece_len));
    let last = end >= body.len();
    let piece = body.get(offset..end).unwrap_or_default();
    let mut out = Vec::with_capacity(MAX_HEADER_LEN + piece.len());
    write_frame_header(
        &mut out,
        channel,
        if last { last_kind } else { kind::FRAGMENT },
    );
    out.extend_from_slice(piece);
    (out, (!last).then_some(end))
}

/// Per-channel reassembly of fragmented messages.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Vec<u8>,
    in_progress: bool,
}

impl Reassembler {
    /// Feeds the next message received on this channel. Returns the message to act on, or
    /// `None` while a fragmented message is still incomplete.
    pub fn push(
        &mut self,
        message: Message,
        max_message_size: u32,
    ) -> Result<Option<Message>, FrameError> {
        let max = max_message_size as usize;
        match message {
            Message::Fragment(piece) if piece.is_empty() => Err(FrameError::EmptyFragment),
            Message::Fragment(piece) => {
                self.grow(&piece, max)?;
                self.in_progress = true;
                Ok(None)
            }
            Message::Sync(last) if self.in_progress => {
                Ok(Some(Message::Sync(self.finish(&last, max)?)))
            }
            Message::Awareness(last) if self.in_progress => {
                Ok(Some(Message::Awareness(self.finish(&last, max)?)))
            }
            Message::Reply(last) if self.in_progress => {
                Ok(Some(Message::Reply(self.finish(&last, max)?)))
            }
            _ if self.in_progress => Err(FrameError::FragmentInterrupted),
            Message::Sync(body) | Message::Awareness(body) if body.len() > max => {
                Err(FrameError::MessageTooLarge {
                    len: body.len(),
                    max: max_message_size,
                })
            }
            other => Ok(Some(other)),
        }
    }

    /// Whether a fragmented message has started and not yet ended.
    pub fn in_progress(&self) -> bool {
        self.in_progress
    }

    /// Bytes buffered for an incomplete message.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    fn grow(&mut self, piece: &[u8], max: usize) -> Result<(), FrameError> {
        let len = self.pending.len() + piece.len();
        if len > max {
            return Err(FrameError::MessageTooLarge {
                len,
                max: max as u32,
            });
        }
        self.pending.extend_from_slice(piece);
        Ok(())
    }

    fn finish(&mut self, last: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
        self.grow(last, max)?;
        self.in_progress = false;
        Ok(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::limits::Limits;
    use crate::CloseCode;

    fn split(message: &Message, max_frame: u32) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        encode_fragmented(ChannelId(3), message, max_frame, |f| frames.push(f));
        frames
    }

    fn rejoin(frames: &[Vec<u8>], limits: &Limits) -> Result<Vec<Message>, FrameError> {
        let mut reassembler = Reassembler::default();
        let mut out = Vec::new();
        for bytes in frames {
            let frame = Frame::decode(bytes, limits)?;
            if let Some(message) = reassembler.push(frame.message, limits.max_message_size)? {
                out.push(message);
            }
        }
        Ok(out)
    }

    #[test]
    fn large_message_splits_and_rejoins() {
        let limits = Limits {
            max_frame_size: 1024,
            ..Limits::default()
        };
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let message = Message::Sync(body);
        let frames = split(&message, 1024);
        assert!(frames.len() > 9);
        assert!(frames.iter().all(|f| f.len() <= 1024));
        assert_eq!(rejoin(&frames, &limits).unwrap(), vec![message]);
    }

    #[test]
    fn small_and_empty_messages_are_one_frame() {
        for body in [vec![], vec![1, 2, 3]] {
            let message = Message::Awareness(body);
            let frames = split(&message, 1024);
            assert_eq!(frames.len(), 1);
            assert_eq!(rejoin(&frames, &Limits::default()).unwrap(), vec![message]);
        }
    }

    #[test]
    fn reassembly_is_bounded() {
        let limits = Limits {
            max_frame_size: 1024,
            max_message_size: 4096,
            ..Limits::default()
        };
        let frames = split(&Message::Sync(vec![0; 5000]), 1024);
        assert!(matches!(
            rejoin(&frames, &limits),
            Err(FrameError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn frame_sizes_below_a_header_are_clamped() {
        let message = Message::Sync((0..20).collect());
        for max_frame in 0..=MIN_ENCODABLE_FRAME_SIZE {
            let frames = split(&message, max_frame);
            assert_eq!(frames.len(), 20, "max_frame_size {max_frame}");
            assert!(frames
                .iter()
                .all(|f| f.len() <= MIN_ENCODABLE_FRAME_SIZE as usize));
            assert_eq!(
                rejoin(&frames, &Limits::default()).unwrap(),
                vec![message.clone()]
            );
        }
    }

    #[test]
    fn pieces_one_at_a_time_match_the_whole_encoding() {
        let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for len in [0, 1, 1017, 1018, 1019, 5000] {
            let body = &body[..len];
            let mut whole = Vec::new();
            encode_body_fragmented(ChannelId(300), kind::SYNC, body, 1024, |f| whole.push(f));
            let mut pieces = Vec::new();
            let mut offset = Some(0);
            while let Some(at) = offset {
                let (frame, next) = encode_piece(ChannelId(300), kind::SYNC, body, at, 1024);
                pieces.push(frame);
                offset = next;
            }
            assert_eq!(pieces, whole, "body of {len} bytes");
        }
    }

    #[test]
    fn interrupted_fragments_are_errors() {
        let mut reassembler = Reassembler::default();
        reassembler.push(Message::Fragment(vec![1]), 100).unwrap();
        assert_eq!(
            reassembler.push(Message::Ack(1), 100),
            Err(FrameError::FragmentInterrupted)
        );
    }

    #[test]
    fn an_empty_fragment_is_an_error() {
        let mut reassembler = Reassembler::default();
        let empty = reassembler.push(Message::Fragment(Vec::new()), 100);
        assert_eq!(empty, Err(FrameError::EmptyFragment));
        assert_eq!(
            FrameError::EmptyFragment.close_code(),
            CloseCode::ProtocolError
        );
    }
}
