//! Requests and replies (§6.9, §5.4): operations on a document's history and on the trash,
//! asked over the same connection as its edits. A `REQUEST` carries an ID the client picks,
//! an operation and its arguments; the server answers each with one `REPLY` carrying the
//! same ID, a status (0 for done, otherwise a code from the channel table) and the result.
//! Both bodies are opaque to the frame layer, like `SYNC`: this file holds their layout.

use crate::digest::{StateDigest, DIGEST_LEN};
use crate::error::FrameError;
use crate::varint::{write_string, write_varint, Reader};

/// Operations, the `op` byte of a `REQUEST`.
pub mod op {
    /// Channel ≥ 1, read: the document's versions.
    pub const LIST_VERSIONS: u8 = 0x01;
    /// Channel ≥ 1, write: save the document's current state as a named version.
    pub const CREATE_VERSION: u8 = 0x02;
    /// Channel ≥ 1, read: one version's entry and content.
    pub const FETCH_VERSION: u8 = 0x03;
    /// Channel ≥ 1, write: make the document's content equal to a version's, as a new edit.
    pub const RESTORE_VERSION: u8 = 0x04;
    /// Channel ≥ 1, write: delete one version.
    pub const DELETE_VERSION: u8 = 0x05;
    /// Channel ≥ 1, read: the digest of the document as the server holds it (§6.10).
    pub const DIGEST: u8 = 0x06;
    /// Channel 0, write on the document: move it to the trash.
    pub const TRASH: u8 = 0x10;
    /// Channel 0, write on the document: bring it back from the trash.
    pub const UNTRASH: u8 = 0x11;
    /// Channel 0: the trashed documents the token can read.
    pub const LIST_TRASH: u8 = 0x12;
    /// Channel 0, write on the document: delete a trashed document and its versions for good.
    pub const PURGE: u8 = 0x13;

    /// Whether `op` is asked on channel 0 (about a document named in the request) rather
    /// than on the document's channel.
    pub fn is_connection_op(op: u8) -> bool {
        matches!(op, TRASH | UNTRASH | LIST_TRASH | PURGE)
    }
}

/// The longest version name, in UTF-8 bytes.
pub const MAX_VERSION_NAME: usize = 100;

/// A request as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u32,
    pub op: RequestOp,
}

/// An operation with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    ListVersions,
    CreateVersion { name: String },
    FetchVersion { version: u64 },
    RestoreVersion { version: u64 },
    DeleteVersion { version: u64 },
    Digest,
    Trash { doc: String },
    Untrash { doc: String },
    ListTrash,
    Purge { doc: String },
}

impl RequestOp {
    pub fn code(&self) -> u8 {
        match self {
            RequestOp::ListVersions => op::LIST_VERSIONS,
            RequestOp::CreateVersion { .. } => op::CREATE_VERSION,
            RequestOp::FetchVersion { .. } => op::FETCH_VERSION,
            RequestOp::RestoreVersion { .. } => op::RESTORE_VERSION,
            RequestOp::DeleteVersion { .. } => op::DELETE_VERSION,
            RequestOp::Digest => op::DIGEST,
            RequestOp::Trash { .. } => op::TRASH,
            RequestOp::Untrash { .. } => op::UNTRASH,
            RequestOp::ListTrash => op::LIST_TRASH,
            RequestOp::Purge { .. } => op::PURGE,
        }
    }

    /// Whether the operation changes something, and so needs write access.
    pub fn needs_write(&self) -> bool {
        !matches!(
            self,
            RequestOp::ListVersions
                | RequestOp::FetchVersion { .. }
                | RequestOp::Digest
                | RequestOp::ListTrash
        )
    }
}

/// Why a request body could not be read. Without an ID the request cannot be answered: the
/// connection is closed with 1002. With one, the reply is status 4400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request without a readable ID: {0}")]
    NoId(FrameError),
    #[error("request {id}: unknown operation {op:#04x}")]
    UnknownOp { id: u32, op: u8 },
    #[error("request {id}: malformed arguments: {source}")]
    Malformed { id: u32, source: FrameError },
    #[error("request {id}: a version name must be 1 to {MAX_VERSION_NAME} bytes")]
    BadName { id: u32 },
}

impl RequestError {
    /// The ID to answer, if the request had one.
    pub fn id(&self) -> Option<u32> {
        match self {
            RequestError::NoId(_) => None,
            RequestError::UnknownOp { id, .. }
            | RequestError::Malformed { id, .. }
            | RequestError::BadName { id } => Some(*id),
        }
    }
}

impl Request {
    pub fn new(id: u32, op: RequestOp) -> Self {
        Self { id, op }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, self.id.into());
        out.push(self.op.code());
        match &self.op {
            RequestOp::ListVersions | RequestOp::Digest | RequestOp::ListTrash => {}
            RequestOp::CreateVersion { name } => write_string(&mut out, name),
            RequestOp::FetchVersion { version }
            | RequestOp::RestoreVersion { version }
            | RequestOp::DeleteVersion { version } => write_varint(&mut out, *version),
            RequestOp::Trash { doc } | RequestOp::Untrash { doc } | RequestOp::Purge { doc } => {
                write_string(&mut out, doc)
            }
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Request, RequestError> {
        let mut reader = Reader::new(body);
        let id = reader.read_varint_u32().map_err(RequestError::NoId)?;
        let code = reader
            .read_u8()
            .map_err(|source| RequestError::Malformed { id, source })?;
        let malformed = |source| RequestError::Malformed { id, source };
        let op = match code {
            op::LIST_VERSIONS => RequestOp::ListVersions,
            op::LIST_TRASH => RequestOp::ListTrash,
            op::DIGEST => RequestOp::Digest,
            op::CREATE_VERSION => {
                let name = reader.read_string().map_err(malformed)?.trim().to_owned();
                if name.is_empty()
                    || name.len() > MAX_VERSION_NAME
                    || name.chars().any(char::is_control)
                {
                    return Err(RequestError::BadName { id });
                }
                RequestOp::CreateVersion { name }
            }
            op::FETCH_VERSION | op::RESTORE_VERSION | op::DELETE_VERSION => {
                let version = reader.read_varint().map_err(malformed)?;
                match code {
                    op::FETCH_VERSION => RequestOp::FetchVersion { version },
                    op::RESTORE_VERSION => RequestOp::RestoreVersion { version },
                    _ => RequestOp::DeleteVersion { version },
                }
            }
            op::TRASH | op::UNTRASH | op::PURGE => {
                let doc = reader.read_string().map_err(malformed)?.to_owned();
                match code {
                    op::TRASH => RequestOp::Trash { doc },
                    op::UNTRASH => RequestOp::Untrash { doc },
                    _ => RequestOp::Purge { doc },
                }
            }
            op => return Err(RequestError::UnknownOp { id, op }),
        };
        reader.finish().map_err(malformed)?;
        Ok(Request { id, op })
    }
}

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionKind {
    /// Saved by the server while the document was edited; thinned as it ages.
    Auto = 0,
    /// Named by a user; kept until a user deletes it.
    Named = 1,
    /// The state just before a restore, so that the restore can be undone; thinned like
    /// automatic versions.
    BeforeRestore = 2,
}

impl VersionKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(VersionKind::Auto),
            1 => Some(VersionKind::Named),
            2 => Some(VersionKind::BeforeRestore),
            _ => None,
        }
    }
}

/// One version as listed: everything but its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub id: u64,
    /// When it was saved, milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub kind: VersionKind,
    /// Empty for automatic versions.
    pub name: String,
    /// Who edited the document since the version before (and who named or restored).
    pub authors: Vec<String>,
    /// Bytes of the stored state.
    pub size: u64,
}

impl VersionInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        write_varint(out, self.id);
        write_varint(out, self.created_ms);
        out.push(self.kind as u8);
        write_string(out, &self.name);
        write_varint(out, self.authors.len() as u64);
        for author in &self.authors {
            write_string(out, author);
        }
        write_varint(out, self.size);
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, FrameError> {
        let id = reader.read_varint()?;
        let created_ms = reader.read_varint()?;
        let kind_byte = reader.read_u8()?;
        let kind =
            VersionKind::from_byte(kind_byte).ok_or(FrameError::InvalidVersionKind(kind_byte))?;
        let name = reader.read_string()?.to_owned();
        let count = reader.read_varint()?;
        // Each author takes at least its length byte.
        if count > reader.remaining() as u64 {
            return Err(FrameError::Truncated);
        }
        let authors = (0..count)
            .map(|_| reader.read_string().map(str::to_owned))
            .collect::<Result<_, _>>()?;
        let size = reader.read_varint()?;
        Ok(VersionInfo {
            id,
            created_ms,
            kind,
            name,
            authors,
            size,
        })
    }
}

/// A document in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    pub doc: String,
    /// When it was trashed, milliseconds since the Unix epoch.
    pub trashed_ms: u64,
    /// When the server deletes it for good, milliseconds since the Unix epoch.
    pub purge_ms: u64,
}

/// A reply's result, by the operation it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// `LIST_VERSIONS`: newest first.
    Versions(Vec<VersionInfo>),
    /// `CREATE_VERSION`: the new version; `RESTORE_VERSION`: the version saved just before
    /// the restore, which undoes it.
    Version(VersionInfo),
    /// `FETCH_VERSION`: the entry and the version's state as one Yjs v1 update.
    Content { info: VersionInfo, state: Vec<u8> },
    /// `LIST_TRASH`: most recently trashed first.
    Trash(Vec<TrashEntry>),
    /// `DIGEST`: the document's state digest as the server holds it when it answers.
    Digest(StateDigest),
    /// `DELETE_VERSION`, `TRASH`, `UNTRASH`, `PURGE`.
    Done,
}

/// A reply: to request `id`, either a result or a refusal with a code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u32,
    pub outcome: Result<ReplyBody, (u16, String)>,
}

/// Reply status for a request that succeeded.
pub const STATUS_OK: u16 = 0;

impl Reply {
    pub fn ok(id: u32, body: ReplyBody) -> Self {
        Self {
            id,
            outcome: Ok(body),
        }
    }

    pub fn refused(id: u32, code: u16, reason: impl Into<String>) -> Self {
        Self {
            id,
            outcome: Err((code, reason.into())),
        }
    }

    /// Encodes the reply. Its reader needs the request's operation to read the result.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, self.id.into());
        match &self.outcome {
            Err((code, reason)) => {
                write_varint(&mut out, (*code).into());
                write_string(&mut out, reason);
            }
            Ok(body) => {
                write_varint(&mut out, STATUS_OK.into());
                match body {
                    ReplyBody::Versions(versions) => {
                        write_varint(&mut out, versions.len() as u64);
                        for version in versions {
                            version.encode(&mut out);
                        }
                    }
                    ReplyBody::Version(info) => info.encode(&mut out),
                    ReplyBody::Content { info, state } => {
                        info.encode(&mut out);
                        out.extend_from_slice(state);
                    }
                    ReplyBody::Trash(entries) => {
                        write_varint(&mut out, entries.len() as u64);
                        for entry in entries {
                            write_string(&mut out, &entry.doc);
                            write_varint(&mut out, entry.trashed_ms);
                            write_varint(&mut out, entry.purge_ms);
                        }
                    }
                    ReplyBody::Digest(digest) => out.extend_from_slice(&digest.0),
                    ReplyBody::Done => {}
                }
            }
        }
        out
    }

    /// The request ID of a reply body, to find the request it answers.
    pub fn peek_id(body: &[u8]) -> Result<u32, FrameError> {
        Reader::new(body).read_varint_u32()
    }

    /// Decodes a reply to a request whose operation was `op`.
    pub fn decode(body: &[u8], op: u8) -> Result<Reply, FrameError> {
        let mut reader = Reader::new(body);
        let id = reader.read_varint_u32()?;
        let status =
            u16::try_from(reader.read_varint()?).map_err(|_| FrameError::VarintOverflow)?;
        if status != STATUS_OK {
            let reason = reader.read_string()?.to_owned();
            reader.finish()?;
            return Ok(Reply::refused(id, status, reason));
        }
        let body = match op {
            op::LIST_VERSIONS => {
                let count = reader.read_varint()?;
                if count > reader.remaining() as u64 {
                    return Err(FrameError::Truncated);
                }
                let versions = (0..count)
                    .map(|_| VersionInfo::decode(&mut reader))
                    .collect::<Result<_, _>>()?;
                ReplyBody::Versions(versions)
            }
            op::CREATE_VERSION | op::RESTORE_VERSION => {
                ReplyBody::Version(VersionInfo::decode(&mut reader)?)
            }
            op::FETCH_VERSION => {
                let info = VersionInfo::decode(&mut reader)?;
                let state = reader.rest().to_vec();
                ReplyBody::Content { info, state }
            }
            op::LIST_TRASH => {
                let count = reader.read_varint()?;
                if count > reader.remaining() as u64 {
                    return Err(FrameError::Truncated);
                }
                let entries = (0..count)
                    .map(|_| {
                        Ok(TrashEntry {
                            doc: reader.read_string()?.to_owned(),
                            trashed_ms: reader.read_varint()?,
                            purge_ms: reader.read_varint()?,
                        })
                    })
                    .collect::<Result<_, FrameError>>()?;
                ReplyBody::Trash(entries)
            }
            op::DIGEST => {
                let bytes = reader.read_bytes(DIGEST_LEN)?;
                ReplyBody::Digest(StateDigest(
                    bytes.try_into().expect("read DIGEST_LEN bytes"),
                ))
            }
            _ => ReplyBody::Done,
        };
        reader.finish()?;
        Ok(Reply::ok(id, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> VersionInfo {
        VersionInfo {
            id,
            created_ms: 1_764_000_000_000,
            kind: VersionKind::Named,
            name: "Draft sent to Ada".into(),
            authors: vec!["Ada".into(), "Grace".into()],
            size: 1234,
        }
    }

    #[test]
    fn requests_round_trip() {
        let ops = [
            RequestOp::ListVersions,
            RequestOp::CreateVersion {
                name: "Before the rewrite".into(),
            },
            RequestOp::FetchVersion { version: 7 },
            RequestOp::RestoreVersion { version: 300 },
            RequestOp::DeleteVersion { version: 1 },
            RequestOp::Digest,
            RequestOp::Trash {
                doc: "team/a".into(),
            },
            RequestOp::Untrash {
                doc: "team/a".into(),
            },
            RequestOp::ListTrash,
            RequestOp::Purge {
                doc: "team/a".into(),
            },
        ];
        for (id, op) in ops.into_iter().enumerate() {
            let request = Request::new(id as u32 + 1, op);
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            (
                op::LIST_VERSIONS,
                ReplyBody::Versions(vec![info(2), info(1)]),
            ),
            (op::CREATE_VERSION, ReplyBody::Version(info(3))),
            (
                op::FETCH_VERSION,
                ReplyBody::Content {
                    info: info(3),
                    state: vec![0, 0],
                },
            ),
            (
                op::LIST_TRASH,
                ReplyBody::Trash(vec![TrashEntry {
                    doc: "doc/1".into(),
                    trashed_ms: 5,
                    purge_ms: 6,
                }]),
            ),
            (op::DIGEST, ReplyBody::Digest(StateDigest([7; DIGEST_LEN]))),
            (op::TRASH, ReplyBody::Done),
        ];
        for (op, body) in replies {
            let reply = Reply::ok(9, body);
            assert_eq!(Reply::decode(&reply.encode(), op), Ok(reply));
        }
        let refused = Reply::refused(4, 4404, "no such version");
        assert_eq!(
            Reply::decode(&refused.encode(), op::FETCH_VERSION),
            Ok(refused)
        );
    }

    #[test]
    fn bad_requests_keep_their_id_when_they_have_one() {
        assert!(matches!(Request::decode(&[]), Err(RequestError::NoId(_))));
        assert_eq!(
            Request::decode(&[0x05, 0x7f]).unwrap_err().id(),
            Some(5),
            "unknown op"
        );
        // A name that is only spaces, and a truncated version number.
        assert_eq!(
            Request::decode(&[0x01, op::CREATE_VERSION, 0x01, b' ']),
            Err(RequestError::BadName { id: 1 })
        );
        assert!(matches!(
            Request::decode(&[0x02, op::FETCH_VERSION, 0x80]),
            Err(RequestError::Malformed { id: 2, .. })
        ));
        assert!(matches!(
            Request::decode(&[0x02, op::LIST_VERSIONS, 0x00]),
            Err(RequestError::Malformed { id: 2, .. })
        ));
    }
}
