//! The replica's state digest (PROTOCOL §6.10), and its comparison with the digest of the
//! server's copy: a way to check that this replica and the server hold the same document.
//!
//! The server answers `DIGEST` in order with the channel's traffic: its digest covers every
//! write this client sent before asking, and every update it relayed to this client before the
//! reply has been applied here when the reply arrives. The replica's digest is taken at that
//! moment, so the two are equal exactly when the replicas agree, unless this replica was
//! edited between the request and the reply (any local transaction that changed it, counted
//! by the update observer); the comparison then says so, and may be asked again. It is only
//! asked once the channel sends local edits as they are made (the server's step 1 answered).

use std::sync::atomic::Ordering;

use quire_protocol::StateDigest;
use tokio::sync::oneshot;
use yrs::Transact;

use crate::document::{DocHandle, DocShared};
use crate::driver::{Command, DigestPair};
use crate::error::ClientError;

/// What comparing the replica with the server's copy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Both hold this digest.
    Same(StateDigest),
    /// They differ. Something is wrong: one holds edits the other lacks although the
    /// channel's traffic was all delivered.
    Different {
        local: StateDigest,
        server: StateDigest,
    },
    /// The replica was edited while the question was out; ask again.
    EditedMeanwhile,
}

impl DocShared {
    /// The server's digest with the replica's taken now (by the driver, as the reply arrives).
    pub(crate) fn digest_pair(&self, server: StateDigest) -> DigestPair {
        let txn = self.doc.transact();
        DigestPair {
            server,
            local: StateDigest::of(&txn),
            local_edits: self.local_edits.load(Ordering::Acquire),
        }
    }
}

impl DocHandle {
    /// The digest of the local replica as it is now.
    pub fn digest(&self) -> StateDigest {
        StateDigest::of(&self.shared.doc.transact())
    }

    /// The digest of the server's copy of the document (read access suffices).
    pub async fn server_digest(&self) -> Result<StateDigest, ClientError> {
        Ok(self.ask_digest().await?.server)
    }

    /// Compares the replica with the server's copy. Fails with [`ClientError::NotOpen`] until
    /// the channel has exchanged state with the server (local edits wait until then, so the
    /// server could not hold them yet). On a read-only channel, local edits never reach the
    /// server: a replica holding some differs, truly.
    pub async fn compare_with_server(&self) -> Result<Comparison, ClientError> {
        let before = self.shared.local_edits.load(Ordering::Acquire);
        let pair = self.ask_digest().await?;
        Ok(if pair.local_edits != before {
            Comparison::EditedMeanwhile
        } else if pair.local == pair.server {
            Comparison::Same(pair.local)
        } else {
            Comparison::Different {
                local: pair.local,
                server: pair.server,
            }
        })
    }

    async fn ask_digest(&self) -> Result<DigestPair, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Digest {
                doc: self.shared.id.clone(),
                reply,
            })
            .map_err(|_| ClientError::ShutDown)?;
        // A dropped waiter means the channel or the connection ended before the reply.
        answer.await.map_err(|_| ClientError::Offline)?
    }
}
