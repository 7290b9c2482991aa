//! `quire-protocol`: Quire's wire sub-protocol, sans-IO. No sockets, no clock, no runtime:
//! bytes and `now` go in, bytes and deadlines come out. The server, the client, the tests and
//! the load tool all drive these same types. docs/PROTOCOL.md is the normative description;
//! its examples are checked against this crate by `tests/doc_examples.rs`.
//!
//! # Layout
//! - [`varint`]: LEB128 varints and length-prefixed strings (lib0's encoding).
//! - [`id`]: `ChannelId`, `DocId`, `ConnId`.
//! - [`channel_map`]: per-channel state of one connection, in a sorted list.
//! - [`limits`]: every size and count limit, with defaults.
//! - [`frame`]: the mux frame and the typed messages it carries.
//! - [`fragment`]: splitting large messages into bounded frames and joining them again.
//! - [`error`]: decoding errors, each naming the close code that answers it.
//! - [`close_code`]: connection and channel close codes with the client's required reaction.
//! - [`handshake`]: the HTTP upgrade check (path, subprotocol, token, refusal statuses).
//! - [`request`]: requests and replies about versions, digests and the trash (§5.4, §6.9,
//!   §6.10).
//! - [`digest`]: a document's state digest, the same on every replica holding the same edits.
//! - [`backoff`]: the reconnect schedule, a pure function of attempt and randomness.
//! - [`heartbeat`]: the ping / silence deadline machine both ends run.
//! - [`session`]: the connection and channel state machines of both ends (server connection,
//!   client across reconnects), driven by frames and `now`.
//! - [`ysync`]: y-protocols sync and awareness payloads, decoded defensively with yrs; updates
//!   are walked in full first ([`ysync::validate`]).

pub mod backoff;
pub mod channel_map;
pub mod close_code;
pub mod digest;
pub mod error;
pub mod fragment;
pub mod frame;
pub mod handshake;
pub mod heartbeat;
pub mod id;
pub mod limits;
pub mod request;
pub mod session;
pub mod varint;
pub mod ysync;

pub use backoff::BackoffPolicy;
pub use channel_map::ChannelMap;
pub use close_code::{ChannelCode, CloseCode, Reaction};
pub use digest::StateDigest;
pub use error::{FrameError, PayloadError};
pub use fragment::{encode_body_fragmented, encode_fragmented, encode_piece, Reassembler};
pub use frame::{Access, Frame, Hello, Message, Welcome};
pub use heartbeat::{Heartbeat, HeartbeatConfig, HeartbeatEvent};
pub use id::{ChannelId, ConnId, DocId};
pub use limits::Limits;

/// The current protocol revision sent in `Hello`.
pub const PROTOCOL_REVISION: u32 = 1;

/// Re-export of the CRDT library at the version this protocol is built on.
pub use yrs;
