//! One document channel's state on a connection.

use std::time::Instant;

use quire_protocol::{Access, Reassembler};

use crate::room_task::RoomHandle;

#[derive(Debug)]
pub(crate) enum ChannelState {
    /// Open (or opening: its room's task sends OPENED once the document is loaded).
    Open(OpenChannel),
    /// The client sent CLOSE; the reply waits until every write it sent before is durable
    /// and acknowledged (§6.3). Frames meanwhile are ignored.
    Draining(OpenChannel),
    /// The server sent CLOSE and waits for the client's CLOSE; frames meanwhile are ignored.
    Closing,
}

#[derive(Debug)]
pub(crate) struct OpenChannel {
    pub room: RoomHandle,
    /// Which opening on this connection this is; tells its ACKs and relays from an earlier
    /// channel's on the same ID.
    pub generation: u64,
    pub access: Access,
    /// Writes (sync step 2 / update) received so far: the sequence number for ACK.
    pub writes: u64,
    pub reassembler: Reassembler,
    /// When the fragmented message in progress on the channel began, if one is.
    pub fragment_started: Option<Instant>,
}
