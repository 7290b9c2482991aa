//! Client errors.

use quire_protocol::ChannelCode;

use crate::store::LocalStoreError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    LocalStore(#[from] LocalStoreError),
    #[error("invalid document ID")]
    InvalidDocId,
    #[error("the server refused the document: {} ({})", .0.as_u16(), .0.description())]
    Refused(ChannelCode),
    #[error("the client has shut down")]
    ShutDown,
    #[error("stored document is corrupt: {0}")]
    Corrupt(String),
    #[error("not connected to the server")]
    Offline,
    #[error("the document is not open on the server yet")]
    NotOpen,
    #[error("the server refused: {reason} ({code})")]
    RequestRefused { code: u16, reason: String },
    #[error("the server's reply does not decode: {0}")]
    BadReply(String),
}
