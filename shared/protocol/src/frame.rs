//! The mux frame: one binary WebSocket message = `channel (varint) | kind (u8) | body`.
//! This file holds the typed messages and their exact byte layout; docs/PROTOCOL.md §3–§5
//! describes the same layout for implementers.

use crate::error::FrameError;
use crate::id::{ChannelId, DocId};
use crate::limits::Limits;
use crate::varint::{write_string, write_varint, Reader};

/// Message kinds on the wire.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const PONG: u8 = 0x04;
    pub const OPEN: u8 = 0x10;
    pub const OPENED: u8 = 0x11;
    pub const CLOSE: u8 = 0x12;
    pub const SYNC: u8 = 0x20;
    pub const AWARENESS: u8 = 0x21;
    pub const ACK: u8 = 0x22;
    pub const FRAGMENT: u8 = 0x30;
    pub const REQUEST: u8 = 0x40;
    pub const REPLY: u8 = 0x41;
}

/// The largest a frame header (channel varint + kind byte) can be.
pub const MAX_HEADER_LEN: usize = 6;

/// Read-only or read-write access to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read = 0,
    Write = 1,
}

impl Access {
    fn from_byte(byte: u8) -> Result<Self, FrameError> {
        match byte {
            0 => Ok(Access::Read),
            1 => Ok(Access::Write),
            other => Err(FrameError::InvalidAccess(other)),
        }
    }

    pub fn can_write(self) -> bool {
        self == Access::Write
    }

    /// What an OPEN asking for `requested` gets where the token allows `allowed` (§6.2): write
    /// only if both are write.
    pub fn granted(requested: Access, allowed: Access) -> Access {
        if requested.can_write() && allowed.can_write() {
            Access::Write
        } else {
            Access::Read
        }
    }
}

/// Client → server, first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol revision within `quire.v1`; currently 1.
    pub revision: u32,
    /// Free text naming the client software, for the server's logs.
    pub client: String,
}

/// Server → client, the answer to `Hello`: who you are and what the server expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub conn_id: u64,
    /// The server sends a Ping this often (milliseconds).
    pub heartbeat_interval_ms: u32,
    /// The server drops a client it has heard nothing from for this long (milliseconds).
    pub heartbeat_timeout_ms: u32,
    pub limits: Limits,
}

/// Every message a mux frame can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    // Connection control, channel 0 only.
    Hello(Hello),
    Welcome(Welcome),
    Ping(u64),
    Pong(u64),
    // Document channels, channel 1 and up.
    Open {
        access: Access,
        doc: DocId,
    },
    Opened {
        access: Access,
    },
    Close {
        code: u16,
        reason: String,
    },
    /// A y-protocols sync message (step 1, step 2 or update), byte for byte.
    Sync(Vec<u8>),
    /// A y-protocols awareness update, byte for byte.
    Awareness(Vec<u8>),
    /// Every write this client sent on the channel, up to and including number `seq`, is on disk.
    Ack(u64),
    /// A piece of a message too large for one frame; see [`crate::fragment`].
    Fragment(Vec<u8>),
    /// A request about a document's versions (on its channel) or the trash (on channel 0);
    /// the body is read by [`crate::request::Request::decode`].
    Request(Vec<u8>),
    /// The answer to a request, on the channel it came on; read by
    /// [`crate::request::Reply::decode`]. The only server message besides `SYNC` and
    /// `AWARENESS` that may be fragmented (a version's content is a whole document).
    Reply(Vec<u8>),
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Welcome(_) => kind::WELCOME,
            Message::Ping(_) => kind::PING,
            Message::Pong(_) => kind::PONG,
            Message::Open { .. } => kind::OPEN,
            Message::Opened { .. } => kind::OPENED,
            Message::Close { .. } => kind::CLOSE,
            Message::Sync(_) => kind::SYNC,
            Message::Awareness(_) => kind::AWARENESS,
            Message::Ack(_) => kind::ACK,
            Message::Fragment(_) => kind::FRAGMENT,
            Message::Request(_) => kind::REQUEST,
            Message::Reply(_) => kind::REPLY,
        }
    }

    /// Whether this kind belongs on channel 0.
    pub fn is_control(&self) -> bool {
        is_control_kind(self.kind())
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Message::Hello(hello) => {
                write_varint(out, hello.revision.into());
                write_string(out, &hello.client);
            }
            Message::Welcome(welcome) => {
                write_varint(out, welcome.conn_id);
                write_varint(out, welcome.heartbeat_interval_ms.into());
                write_varint(out, welcome.heartbeat_timeout_ms.into());
                write_varint(out, welcome.limits.max_frame_size.into());
                write_varint(out, welcome.limits.max_message_size.into());
                write_varint(out, welcome.limits.max_channels.into());
                write_varint(out, welcome.limits.max_doc_id_len.into());
            }
            Message::Ping(nonce) | Message::Pong(nonce) | Message::Ack(nonce) => {
                write_varint(out, *nonce)
            }
            Message::Open { access, doc } => {
                out.push(*access as u8);
                write_string(out, doc.as_str());
            }
            Message::Opened { access } => out.push(*access as u8),
            Message::Close { code, reason } => {
                write_varint(out, (*code).into());
                write_string(out, reason);
            }
            Message::Sync(bytes)
            | Message::Awareness(bytes)
            | Message::Fragment(bytes)
            | Message::Request(bytes)
            | Message::Reply(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// Decodes the body of a message of `kind`, already known to be allowed on its channel.
    pub fn decode_body(kind: u8, body: &[u8], limits: &Limits) -> Result<Message, FrameError> {
        let mut reader = Reader::new(body);
        let message = match kind {
            kind::HELLO => Message::Hello(Hello {
                revision: reader.read_varint_u32()?,
                client: reader.read_string()?.to_owned(),
            }),
            kind::WELCOME => {
                let welcome = Welcome {
                    conn_id: reader.read_varint()?,
                    heartbeat_interval_ms: reader.read_varint_u32()?,
                    heartbeat_timeout_ms: reader.read_varint_u32()?,
                    limits: Limits {
                        max_frame_size: reader.read_varint_u32()?,
                        max_message_size: reader.read_varint_u32()?,
                        max_channels: reader.read_varint_u32()?,
                        max_doc_id_len: reader.read_varint_u32()?,
                    },
                };
                // A server never announces less (§9); a client could not fit its frames in it.
                let max_frame_size = welcome.limits.max_frame_size;
                if max_frame_size < Limits::MIN_FRAME_SIZE {
                    return Err(FrameError::FrameSizeBelowMinimum(max_frame_size));
                }
                Message::Welcome(welcome)
            }
            kind::PING => Message::Ping(reader.read_varint()?),
            kind::PONG => Message::Pong(reader.read_varint()?),
            kind::ACK => Message::Ack(reader.read_varint()?),
            kind::OPEN => {
                let access = Access::from_byte(reader.read_u8()?)?;
                let doc = DocId::parse(reader.read_string()?, limits.max_doc_id_len)?;
                Message::Open { access, doc }
            }
            kind::OPENED => Message::Opened {
                access: Access::from_byte(reader.read_u8()?)?,
            },
            kind::CLOSE => {
                let code =
                    u16::try_from(reader.read_varint()?).map_err(|_| FrameError::VarintOverflow)?;
                Message::Close {
                    code,
                    reason: reader.read_string()?.to_owned(),
                }
            }
            kind::SYNC => Message::Sync(reader.rest().to_vec()),
            kind::AWARENESS => Message::Awareness(reader.rest().to_vec()),
            kind::FRAGMENT => Message::Fragment(reader.rest().to_vec()),
            kind::REQUEST => Message::Request(reader.rest().to_vec()),
            kind::REPLY => Message::Reply(reader.rest().to_vec()),
            other => return Err(FrameError::UnknownKind(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}

fn is_control_kind(kind: u8) -> bool {
    matches!(kind, kind::HELLO | kind::WELCOME | kind::PING | kind::PONG)
}

/// One mux frame: a message on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub channel: ChannelId,
    pub message: Message,
}

impl Frame {
    pub fn new(channel: ChannelId, message: Message) -> Self {
        Self { channel, message }
    }

    pub fn control(message: Message) -> Self {
        Self::new(ChannelId::CONTROL, message)
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_frame_header(out, self.channel, self.message.kind());
        self.message.encode_body(out);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes one WebSocket message. Checks, in order: the frame size limit, the header,
    /// that the kind belongs on the channel, then the body.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
        if bytes.len() > limits.max_frame_size as usize {
            return Err(FrameError::FrameTooLarge {
                len: bytes.len(),
                max: limits.max_frame_size,
            });
        }
        if bytes.is_empty() {
            return Err(FrameError::Empty);
        }
        let mut reader = Reader::new(bytes);
        let channel = ChannelId(reader.read_varint_u32()?);
        let kind = reader.read_u8()?;
        // Requests and replies go on channel 0 (the trash) and on document channels (versions).
        let any_channel = matches!(kind, kind::REQUEST | kind::REPLY);
        if !any_channel && is_control_kind(kind) != channel.is_control() {
            return match kind {
                kind::HELLO..=kind::PONG
                | kind::OPEN..=kind::CLOSE
                | kind::SYNC..=kind::ACK
                | kind::FRAGMENT => Err(FrameError::WrongChannel {
                    kind,
                    channel: channel.0,
                }),
                other => Err(FrameError::UnknownKind(other)),
            };
        }
        let message = Message::decode_body(kind, reader.rest(), limits)?;
        Ok(Frame { channel, message })
    }
}

/// The channel a frame is addressed to, read from its first bytes, if they hold a varint.
/// Lets a receiver answer a bad `Open` on the right channel.
pub fn peek_channel(bytes: &[u8]) -> Option<ChannelId> {
    Reader::new(bytes).read_varint_u32().ok().map(ChannelId)
}

/// Writes `channel | kind`, the part of a frame before its body.
pub fn write_frame_header(out: &mut Vec<u8>, channel: ChannelId, kind: u8) {
    write_varint(out, channel.0.into());
    out.push(kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let bytes = frame.encode();
        assert_eq!(Frame::decode(&bytes, &Limits::default()), Ok(frame));
    }

    #[test]
    fn every_message_round_trips() {
        let doc = DocId::parse("team/notes", 256).unwrap();
        round_trip(Frame::control(Message::Hello(Hello {
            revision: 1,
            client: "quire".into(),
        })));
        round_trip(Frame::control(Message::Welcome(Welcome {
            conn_id: 7,
            heartbeat_interval_ms: 15_000,
            heartbeat_timeout_ms: 45_000,
            limits: Limits::default(),
        })));
        round_trip(Frame::control(Message::Ping(u64::MAX)));
        round_trip(Frame::control(Message::Pong(0)));
        let ch = ChannelId(300);
        round_trip(Frame::new(
            ch,
            Message::Open {
                access: Access::Write,
                doc,
            },
        ));
        round_trip(Frame::new(
            ch,
            Message::Opened {
                access: Access::Read,
            },
        ));
        round_trip(Frame::new(
            ch,
            Message::Close {
                code: 4403,
                reason: "forbidden".into(),
            },
        ));
        round_trip(Frame::new(ch, Message::Sync(vec![0, 1, 0])));
        round_trip(Frame::new(ch, Message::Awareness(vec![])));
        round_trip(Frame::new(ch, Message::Ack(12)));
        round_trip(Frame::new(ch, Message::Fragment(vec![9; 100])));
    }

    #[test]
    fn kinds_must_match_their_channel() {
        let wrong = [0x00, kind::SYNC, 0x00];
        assert_eq!(
            Frame::decode(&wrong, &Limits::default()),
            Err(FrameError::WrongChannel {
                kind: kind::SYNC,
                channel: 0
            })
        );
        let wrong = [0x01, kind::PING, 0x00];
        assert_eq!(
            Frame::decode(&wrong, &Limits::default()),
            Err(FrameError::WrongChannel {
                kind: kind::PING,
                channel: 1
            })
        );
        assert_eq!(
            Frame::decode(&[0x01, 0x7f], &Limits::default()),
            Err(FrameError::UnknownKind(0x7f))
        );
    }

    #[test]
    fn size_limit_is_checked_first() {
        let limits = Limits {
            max_frame_size: 1024,
            ..Limits::default()
        };
        let big = vec![0u8; 1025];
        assert_eq!(
            Frame::decode(&big, &limits),
            Err(FrameError::FrameTooLarge {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn welcome_below_the_minimum_frame_size_is_refused() {
        let welcome = |max_frame_size| {
            Frame::control(Message::Welcome(Welcome {
                conn_id: 1,
                heartbeat_interval_ms: 10_000,
                heartbeat_timeout_ms: 30_000,
                limits: Limits {
                    max_frame_size,
                    ..Limits::default()
                },
            }))
            .encode()
        };
        let at_minimum = welcome(Limits::MIN_FRAME_SIZE);
        assert!(Frame::decode(&at_minimum, &Limits::default()).is_ok());
        for too_small in [0, 6, Limits::MIN_FRAME_SIZE - 1] {
            let err = Frame::decode(&welcome(too_small), &Limits::default()).unwrap_err();
            assert_eq!(err, FrameError::FrameSizeBelowMinimum(too_small));
            assert_eq!(
                err.close_code(),
                crate::close_code::CloseCode::ProtocolError
            );
        }
    }

    #[test]
    fn trailing_bytes_in_fixed_bodies_are_errors() {
        let bytes = [0x00, kind::PING, 0x01, 0x00];
        assert_eq!(
            Frame::decode(&bytes, &Limits::default()),
            Err(FrameError::TrailingBytes)
        );
    }

    #[test]
    fn bad_open_names_a_channel_code() {
        let bytes = [0x01, kind::OPEN, 0x01, 0x00];
        let err = Frame::decode(&bytes, &Limits::default()).unwrap_err();
        assert_eq!(err, FrameError::InvalidDocId);
        assert!(err.channel_code().is_some());
    }
}
