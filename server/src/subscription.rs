//! Who a subscription is: one channel on one connection. A leaf that rooms, awareness and
//! connections all name subscribers by.

use quire_protocol::{ChannelId, ConnId};

/// One subscription: a channel on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub conn: ConnId,
    pub channel: ChannelId,
}

impl SubKey {
    /// The server itself, as the origin of its own edits (a restore): no subscriber has this
    /// key (subscribers are on channels 1 and up), so such an edit is relayed to all of them.
    pub const SERVER: SubKey = SubKey {
        conn: ConnId(0),
        channel: ChannelId::CONTROL,
    };
}
