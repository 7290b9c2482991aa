//! The close-code tables: connection-level WebSocket close codes (RFC 6455 and Quire's 4xxx
//! range) and channel-level codes, each with the reaction the spec requires of a client.
//! The tables are data so that the spec, the client and the tests read the same thing.

/// What a client must do after a connection or channel ended with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The ending was asked for; do nothing.
    Stop,
    /// A planned ending (server restart): reconnect soon, after a short jittered delay.
    RetrySoon,
    /// A transient failure: reconnect with exponential backoff and full jitter.
    RetryWithBackoff,
    /// The credentials are no longer good: do not retry until a new token is supplied.
    WaitForNewCredentials,
    /// The peer saw a protocol violation; this is a bug in one of the two ends. Report it, then
    /// retry with backoff (the bug may be on the server and fixed by a redeploy).
    ReportBugThenRetry,
    /// Permanent for this channel: do not reopen it with the same request.
    DoNotReopen,
}

macro_rules! code_table {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal, $reaction:ident, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A code this table does not know; treated as [`Reaction::RetryWithBackoff`].
            Other(u16),
        }

        impl $name {
            /// Every known code, in table order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn from_u16(value: u16) -> Self {
                match value {
                    $($value => $name::$variant,)*
                    other => $name::Other(other),
                }
            }

            pub fn as_u16(self) -> u16 {
                match self {
                    $($name::$variant => $value,)*
                    $name::Other(other) => other,
                }
            }

            /// The reaction the spec requires of a client.
            pub fn reaction(self) -> Reaction {
                match self {
                    $($name::$variant => Reaction::$reaction,)*
                    $name::Other(_) => Reaction::RetryWithBackoff,
                }
            }

            /// A short, stable description, also used as the close reason text.
            pub fn description(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(_) => "unknown code",
                }
            }
        }
    };
}

code_table! {
    /// Codes in the WebSocket Close frame that ends a whole connection.
    CloseCode {
        /// The side that closed is done (the user closed the app's connection).
        Normal = 1000, Stop, "normal closure";
        /// Server shutting down or restarting, or the client app quitting.
        GoingAway = 1001, RetrySoon, "going away";
        /// Malformed WebSocket or mux frame, or a frame the state does not allow.
        ProtocolError = 1002, ReportBugThenRetry, "protocol error";
        /// A text frame: Quire only speaks binary frames.
        UnsupportedData = 1003, ReportBugThenRetry, "text frames are not supported";
        /// Abnormal closure: never sent, only observed when TCP ended without a Close frame.
        Abnormal = 1006, RetryWithBackoff, "connection lost";
        /// A string in a control message that is not valid UTF-8.
        InvalidPayload = 1007, ReportBugThenRetry, "invalid UTF-8";
        /// A policy violation: more than 100 channel errors on one connection.
        PolicyViolation = 1008, RetryWithBackoff, "policy violation";
        /// A frame or reassembled message above the negotiated limit.
        MessageTooBig = 1009, ReportBugThenRetry, "message too big";
        /// The server failed in a way that is not the client's fault.
        InternalError = 1011, RetryWithBackoff, "internal error";
        /// The server is overloaded; come back later.
        TryAgainLater = 1013, RetryWithBackoff, "try again later";
        /// The token expired while the connection was open.
        TokenExpired = 4001, WaitForNewCredentials, "token expired";
        /// The token was rejected after the upgrade (revoked signing key).
        TokenRejected = 4003, WaitForNewCredentials, "token rejected";
        /// The peer did not answer heartbeats within the timeout.
        HeartbeatTimeout = 4008, RetryWithBackoff, "heartbeat timeout";
        /// The client read too slowly and its outbound queue filled.
        SlowConsumer = 4009, RetryWithBackoff, "slow consumer";
        /// The client did not send Hello in time, or sent a frame before it.
        HelloExpected = 4010, ReportBugThenRetry, "hello expected";
    }
}

code_table! {
    /// Codes in a channel Close message: they end one channel, never the connection.
    ChannelCode {
        /// The side that closed is done with the document.
        Normal = 1000, Stop, "closed";
        /// The server is unloading the document or restarting; reopen soon.
        GoingAway = 4001, RetrySoon, "going away";
        /// The Open message was malformed: bad document ID or access byte.
        BadRequest = 4400, DoNotReopen, "bad request";
        /// The token grants no access to this document.
        Forbidden = 4403, DoNotReopen, "forbidden";
        /// A frame arrived for a channel that is not open.
        UnknownChannel = 4404, ReportBugThenRetry, "unknown channel";
        /// A write (sync step 2 or update) on a channel opened read-only.
        ReadOnly = 4405, DoNotReopen, "channel is read-only";
        /// Open on a channel ID that is already in use.
        ChannelInUse = 4409, ReportBugThenRetry, "channel ID in use";
        /// The document is in the trash: it cannot be opened until someone restores it, and
        /// open channels on it are closed when it is trashed.
        Trashed = 4410, DoNotReopen, "document is in the trash";
        /// A y-protocols message that could not be decoded or applied; nothing of it was kept.
        InvalidUpdate = 4422, ReportBugThenRetry, "invalid update";
        /// Opening this channel would exceed the channels-per-connection limit.
        TooManyChannels = 4429, RetryWithBackoff, "too many channels";
        /// Storage failed: the last updates were not made durable and are not acknowledged.
        StorageFailure = 4500, RetryWithBackoff, "storage failure";
        /// The server's memory budget is exceeded: loading a document or taking a write would
        /// grow it. Nothing of the refused write was kept.
        Overloaded = 4503, RetryWithBackoff, "try again later";
    }
}

impl From<u16> for CloseCode {
    fn from(value: u16) -> Self {
        Self::from_u16(value)
    }
}

impl From<u16> for ChannelCode {
    fn from(value: u16) -> Self {
        Self::from_u16(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_u16(code.as_u16()), *code);
        }
        for code in ChannelCode::ALL {
            assert_eq!(ChannelCode::from_u16(code.as_u16()), *code);
        }
        assert_eq!(CloseCode::from_u16(4999), CloseCode::Other(4999));
    }

    #[test]
    fn reactions_follow_the_spec() {
        assert_eq!(CloseCode::Normal.reaction(), Reaction::Stop);
        assert_eq!(CloseCode::GoingAway.reaction(), Reaction::RetrySoon);
        assert_eq!(
            CloseCode::TokenExpired.reaction(),
            Reaction::WaitForNewCredentials
        );
        assert_eq!(
            CloseCode::TokenRejected.reaction(),
            Reaction::WaitForNewCredentials
        );
        assert_eq!(
            CloseCode::ProtocolError.reaction(),
            Reaction::ReportBugThenRetry
        );
        assert_eq!(CloseCode::Abnormal.reaction(), Reaction::RetryWithBackoff);
        assert_eq!(
            CloseCode::Other(4321).reaction(),
            Reaction::RetryWithBackoff
        );
        assert_eq!(ChannelCode::Forbidden.reaction(), Reaction::DoNotReopen);
        assert_eq!(
            ChannelCode::StorageFailure.reaction(),
            Reaction::RetryWithBackoff
        );
    }

    /// The whole tables of docs/PROTOCOL.md §10.1 and §10.2, code by code.
    #[test]
    fn every_code_has_the_reaction_of_the_spec_table() {
        use Reaction::*;
        let connection: Vec<(u16, Reaction)> = CloseCode::ALL
            .iter()
            .map(|c| (c.as_u16(), c.reaction()))
            .collect();
        let spec = [
            (1000, Stop),
            (1001, RetrySoon),
            (1002, ReportBugThenRetry),
            (1003, ReportBugThenRetry),
            (1006, RetryWithBackoff),
            (1007, ReportBugThenRetry),
            (1008, RetryWithBackoff),
            (1009, ReportBugThenRetry),
            (1011, RetryWithBackoff),
            (1013, RetryWithBackoff),
            (4001, WaitForNewCredentials),
            (4003, WaitForNewCredentials),
            (4008, RetryWithBackoff),
            (4009, RetryWithBackoff),
            (4010, ReportBugThenRetry),
        ];
        assert_eq!(connection, spec);
        let channel: Vec<(u16, Reaction)> = ChannelCode::ALL
            .iter()
            .map(|c| (c.as_u16(), c.reaction()))
            .collect();
        let spec = [
            (1000, Stop),
            (4001, RetrySoon),
            (4400, DoNotReopen),
            (4403, DoNotReopen),
            (4404, ReportBugThenRetry),
            (4405, DoNotReopen),
            (4409, ReportBugThenRetry),
            (4410, DoNotReopen),
            (4422, ReportBugThenRetry),
            (4429, RetryWithBackoff),
            (4500, RetryWithBackoff),
            (4503, RetryWithBackoff),
        ];
        assert_eq!(channel, spec);
        assert_eq!(ChannelCode::from_u16(4999).reaction(), RetryWithBackoff);
    }

    #[test]
    fn application_codes_are_in_the_private_range() {
        for code in CloseCode::ALL {
            let value = code.as_u16();
            assert!((1000..=1015).contains(&value) || (4000..=4999).contains(&value));
        }
    }
}
