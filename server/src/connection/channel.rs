//! One document channel's state on a connection.

use std::sync::Arc;

use quire_protocol::{Access, Reassembler};

use crate::room::Room;

#[derive(Debug)]
pub(crate) enum ChannelState {
    /// Open and subscribed to its room.
    Open(OpenChannel),
    /// The server sent CLOSE and waits for the client's CLOSE; frames meanwhile are ignored.
    Closing,
}

#[derive(Debug)]
pub(crate) struct OpenChannel {
    pub room: Arc<Room>,
    /// Which opening on this connection this is; tells its ACKs from an earlier channel's.
    pub generation: u64,
    pub access: Access,
    /// Writes (sync step 2 / update) received so far: the sequence number for ACK.
    pub writes: u64,
    pub reassembler: Reassembler,
}
