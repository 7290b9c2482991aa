//! Versions and the trash for the webview: each call is one request to the server over the
//! app's connection (quire-client's `history`), answered with what the panels show. A
//! version's content comes back as text, the form the history panel compares.

use quire_client::CONTENT;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Transact};

use crate::dto::{TrashDto, VersionDto};
use crate::session::{Session, SessionError};

impl Session {
    pub async fn list_versions(&self, doc: &str) -> Result<Vec<VersionDto>, SessionError> {
        let handle = self.handle(doc).await?;
        let versions = handle.versions().await?;
        Ok(versions.iter().map(VersionDto::from).collect())
    }

    pub async fn create_version(&self, doc: &str, name: &str) -> Result<VersionDto, SessionError> {
        let handle = self.handle(doc).await?;
        Ok(VersionDto::from(&handle.create_version(name).await?))
    }

    /// The text of a version.
    pub async fn version_text(&self, doc: &str, version: u64) -> Result<String, SessionError> {
        let handle = self.handle(doc).await?;
        let (_, state) = handle.fetch_version(version).await?;
        text_of(&state)
    }

    /// Restores a version; returns the version saved just before, which undoes it.
    pub async fn restore_version(
        &self,
        doc: &str,
        version: u64,
    ) -> Result<VersionDto, SessionError> {
        let handle = self.handle(doc).await?;
        Ok(VersionDto::from(&handle.restore_version(version).await?))
    }

    pub async fn trash(&self, doc: &str) -> Result<(), SessionError> {
        Ok(self.client().await?.trash(doc).await?)
    }

    pub async fn untrash(&self, doc: &str) -> Result<(), SessionError> {
        Ok(self.client().await?.untrash(doc).await?)
    }

    pub async fn list_trash(&self) -> Result<Vec<TrashDto>, SessionError> {
        let entries = self.client().await?.list_trash().await?;
        Ok(entries
            .into_iter()
            .map(|entry| TrashDto {
                doc: entry.doc,
                trashed_ms: entry.trashed_ms,
                purge_ms: entry.purge_ms,
            })
            .collect())
    }

    pub async fn purge(&self, doc: &str) -> Result<(), SessionError> {
        Ok(self.client().await?.purge(doc).await?)
    }
}

/// The `content` text of a document state.
fn text_of(state: &[u8]) -> Result<String, SessionError> {
    let update =
        yrs::Update::decode_v1(state).map_err(|e| SessionError::BadUpdate(e.to_string()))?;
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text(CONTENT);
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| SessionError::BadUpdate(e.to_string()))?;
    let txn = doc.transact();
    Ok(text.get_string(&txn))
}
