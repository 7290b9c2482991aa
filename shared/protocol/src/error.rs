//! Decoding errors, each naming the close code that answers it.

use crate::close_code::{ChannelCode, CloseCode};

/// A mux frame (or control message) that cannot be accepted. Every variant is a
/// connection-level violation except [`FrameError::InvalidDocId`], which only refuses the
/// channel being opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("frame ends early")]
    Truncated,
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("message kind {kind:#04x} is not allowed on channel {channel}")]
    WrongChannel { kind: u8, channel: u32 },
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: u32 },
    #[error("reassembled message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge { len: usize, max: u32 },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("bytes after the end of a message")]
    TrailingBytes,
    #[error("invalid access byte {0}")]
    InvalidAccess(u8),
    #[error("invalid document ID")]
    InvalidDocId,
    #[error("unknown version kind {0}")]
    InvalidVersionKind(u8),
    #[error("a fragmented message must end with a sync or awareness frame")]
    FragmentInterrupted,
    #[error("an empty FRAGMENT: every piece of a fragmented message carries bytes")]
    EmptyFragment,
    /// A `WELCOME` announcing frames smaller than [`Limits::MIN_FRAME_SIZE`]: a client cannot
    /// honour it (not every control message fits), so it must not trust the server.
    ///
    /// [`Limits::MIN_FRAME_SIZE`]: crate::limits::Limits::MIN_FRAME_SIZE
    #[error("WELCOME announces a frame size of {0} bytes, below the minimum of {min}", min = crate::limits::Limits::MIN_FRAME_SIZE)]
    FrameSizeBelowMinimum(u32),
}

impl FrameError {
    /// The WebSocket close code that answers this error at the connection level.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::FrameTooLarge { .. } | FrameError::MessageTooLarge { .. } => {
                CloseCode::MessageTooBig
            }
            FrameError::InvalidUtf8 => CloseCode::InvalidPayload,
            _ => CloseCode::ProtocolError,
        }
    }

    /// Whether only the channel being opened is refused (with [`ChannelCode::BadRequest`])
    /// while the connection carries on.
    pub fn channel_code(&self) -> Option<ChannelCode> {
        match self {
            FrameError::InvalidDocId | FrameError::InvalidAccess(_) => {
                Some(ChannelCode::BadRequest)
            }
            _ => None,
        }
    }
}

/// A y-protocols payload inside a document channel that cannot be used. Always answered by
/// closing that channel with [`ChannelCode::InvalidUpdate`]; nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed y-protocols message: {0}")]
    Malformed(String),
    #[error("update claims {claimed} entries in {available} bytes")]
    ImplausibleCount { claimed: u64, available: usize },
    #[error("client ID {0} does not fit in 53 bits")]
    ClientIdTooLarge(u64),
    #[error("the CRDT library panicked while decoding")]
    DecoderPanicked,
    #[error("struct or delete range of length {len} at clock {clock} of client {client} ends past the largest clock (2^32 - 1)")]
    ClockOverflow { client: u64, clock: u32, len: u32 },
    #[error("{0} of length 0")]
    EmptyRange(&'static str),
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("values nested more than {0} levels deep")]
    TooDeep(usize),
    #[error("{0} bytes after the end of the update")]
    TrailingBytes(usize),
    #[error("item {client}:{clock} refers to {client}:{refers_to}, which its client cannot have made before it")]
    ImpossibleReference {
        client: u64,
        clock: u32,
        refers_to: u32,
    },
    #[error("{0} is not accepted: the CRDT library cannot store it faithfully")]
    Unsupported(&'static str),
}

impl PayloadError {
    pub fn channel_code(&self) -> ChannelCode {
        ChannelCode::InvalidUpdate
    }
}
