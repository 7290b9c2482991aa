//! Who a subscription is: one channel on one connection. A leaf that rooms, awareness and
//! connections all name subscribers by.

use quire_protocol::{ChannelId, ConnId};

/// One subscription: a channel on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub conn: ConnId,
    pub channel: ChannelId,
}
