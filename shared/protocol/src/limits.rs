//! Every size and count limit of the protocol in one place, with the defaults the spec names.
//! The server announces its values in `Welcome`; a client must stay within them.

/// Limits on what one peer may send the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message (one mux frame, header included), in bytes.
    pub max_frame_size: u32,
    /// Largest message after reassembling fragments (a document's full state), in bytes.
    pub max_message_size: u32,
    /// Most document channels open at once on one connection.
    pub max_channels: u32,
    /// Longest document ID, in UTF-8 bytes.
    pub max_doc_id_len: u32,
}

impl Limits {
    pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1024 * 1024;
    pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 256 * 1024 * 1024;
    pub const DEFAULT_MAX_CHANNELS: u32 = 1024;
    pub const DEFAULT_MAX_DOC_ID_LEN: u32 = 256;
    /// The smallest frame size a server may announce: enough for every control message.
    pub const MIN_FRAME_SIZE: u32 = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_channels: Self::DEFAULT_MAX_CHANNELS,
            max_doc_id_len: Self::DEFAULT_MAX_DOC_ID_LEN,
        }
    }
}
