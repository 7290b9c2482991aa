//! Identifier newtypes: channels, documents, connections.

use std::fmt;

use crate::error::FrameError;

/// A channel on one connection. Channel 0 is reserved for connection control; document
/// channels use 1 and up, chosen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

impl ChannelId {
    /// The connection-control channel.
    pub const CONTROL: ChannelId = ChannelId(0);

    pub fn is_control(self) -> bool {
        self == Self::CONTROL
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A connection, numbered by the server and announced in `Welcome` (for logs on both ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A document's ID: 1 to `max_doc_id_len` bytes of UTF-8 with no control characters.
/// `/` is allowed and conventional for grouping (`team/notes`), which token patterns use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

impl DocId {
    /// Checks `text` against the spec's rules and the given length limit.
    pub fn parse(text: &str, max_len: u32) -> Result<Self, FrameError> {
        if text.is_empty() || text.len() > max_len as usize {
            return Err(FrameError::InvalidDocId);
        }
        if text.chars().any(char::is_control) {
            return Err(FrameError::InvalidDocId);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_id_rules() {
        assert!(DocId::parse("team/notes", 256).is_ok());
        assert!(DocId::parse("ünïcode ok", 256).is_ok());
        assert_eq!(DocId::parse("", 256), Err(FrameError::InvalidDocId));
        assert_eq!(DocId::parse("a\nb", 256), Err(FrameError::InvalidDocId));
        assert_eq!(DocId::parse("abcd", 3), Err(FrameError::InvalidDocId));
    }
}
