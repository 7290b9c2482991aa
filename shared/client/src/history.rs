//! Versions and the trash, asked of the server over the client's one connection (PROTOCOL
//! §5.4, §6.9). Each call sends one request and waits for its reply; it fails at once with
//! [`ClientError::Offline`] while disconnected, and with [`ClientError::NotOpen`] for a
//! document whose channel is not open yet. Nothing is retried: these are the user's actions,
//! and a user who sees the error can ask again.

use quire_protocol::request::{ReplyBody, RequestOp, TrashEntry, VersionInfo};
use quire_protocol::DocId;
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::document::DocHandle;
use crate::driver::Command;
use crate::error::ClientError;

async fn request(
    commands: &mpsc::UnboundedSender<Command>,
    doc: Option<DocId>,
    op: RequestOp,
) -> Result<ReplyBody, ClientError> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command::Request { doc, op, reply })
        .map_err(|_| ClientError::ShutDown)?;
    // A dropped waiter means the channel or the connection ended before the reply.
    answer.await.map_err(|_| ClientError::Offline)?
}

fn unexpected(body: ReplyBody) -> ClientError {
    ClientError::BadReply(format!("unexpected result {body:?}"))
}

impl DocHandle {
    async fn ask(&self, op: RequestOp) -> Result<ReplyBody, ClientError> {
        request(&self.commands, Some(self.shared.id.clone()), op).await
    }

    /// The document's versions, newest first.
    pub async fn versions(&self) -> Result<Vec<VersionInfo>, ClientError> {
        match self.ask(RequestOp::ListVersions).await? {
            ReplyBody::Versions(versions) => Ok(versions),
            other => Err(unexpected(other)),
        }
    }

    /// Saves the document as the server holds it now as a version named `name`.
    pub async fn create_version(&self, name: &str) -> Result<VersionInfo, ClientError> {
        let name = name.to_owned();
        match self.ask(RequestOp::CreateVersion { name }).await? {
            ReplyBody::Version(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// A version's entry and its state (one Yjs v1 update), for reading only.
    pub async fn fetch_version(&self, version: u64) -> Result<(VersionInfo, Vec<u8>), ClientError> {
        match self.ask(RequestOp::FetchVersion { version }).await? {
            ReplyBody::Content { info, state } => Ok((info, state)),
            other => Err(unexpected(other)),
        }
    }

    /// Makes the document's text the version's, as a new edit that reaches every replica
    /// (this one too, as a remote update). Returns the version saved just before, which
    /// undoes the restore.
    pub async fn restore_version(&self, version: u64) -> Result<VersionInfo, ClientError> {
        match self.ask(RequestOp::RestoreVersion { version }).await? {
            ReplyBody::Version(undo) => Ok(undo),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a version.
    pub async fn delete_version(&self, version: u64) -> Result<(), ClientError> {
        self.ask(RequestOp::DeleteVersion { version })
            .await
            .map(drop)
    }
}

impl Client {
    async fn ask(&self, op: RequestOp) -> Result<ReplyBody, ClientError> {
        request(&self.commands, None, op).await
    }

    /// Moves a document to the trash, for everyone: its channels close with 4410.
    pub async fn trash(&self, doc: &str) -> Result<(), ClientError> {
        let doc = doc.to_owned();
        self.ask(RequestOp::Trash { doc }).await.map(drop)
    }

    /// Brings a document back from the trash.
    pub async fn untrash(&self, doc: &str) -> Result<(), ClientError> {
        let doc = doc.to_owned();
        self.ask(RequestOp::Untrash { doc }).await.map(drop)
    }

    /// The trashed documents this client's token can see, most recently trashed first.
    pub async fn list_trash(&self) -> Result<Vec<TrashEntry>, ClientError> {
        match self.ask(RequestOp::ListTrash).await? {
            ReplyBody::Trash(entries) => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a trashed document for good, versions included.
    pub async fn purge(&self, doc: &str) -> Result<(), ClientError> {
        let doc = doc.to_owned();
        self.ask(RequestOp::Purge { doc }).await.map(drop)
    }
}
