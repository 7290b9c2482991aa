//! The trash (PROTOCOL §5.4): requests on channel 0 that move a document to the trash, bring
//! it back, list what is there and delete it for good; and the purge of documents whose time
//! in the trash is up. A trashed document keeps everything it had (log, snapshot, versions)
//! until it is purged; meanwhile opening it is refused with 4410.

use std::sync::Arc;
use std::time::Duration;

use quire_protocol::request::{Reply, ReplyBody, Request, RequestOp, TrashEntry};
use quire_protocol::{ChannelCode, DocId};

use crate::auth::Claims;
use crate::room_task::{Registry, RoomJob};
use crate::room_versions::now_ms;
use crate::server::Server;
use crate::store::{Store, StoreError};

/// How often the server looks for documents whose time in the trash is up.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Answers a request asked on channel 0.
pub(crate) async fn handle<S: Store>(
    server: &Server<S>,
    claims: &Claims,
    request: Request,
) -> Reply {
    let id = request.id;
    let retention = server.config.history.trash_retention.as_millis() as u64;
    let refuse = |code: ChannelCode, reason: &str| Reply::refused(id, code.as_u16(), reason);
    let store = server.rooms.store();
    let doc = match &request.op {
        RequestOp::Trash { doc } | RequestOp::Untrash { doc } | RequestOp::Purge { doc } => {
            let Ok(doc) = DocId::parse(doc, server.config.limits.max_doc_id_len) else {
                return refuse(ChannelCode::BadRequest, "bad document ID");
            };
            match claims.access_for(doc.as_str()) {
                Some(access) if access.can_write() => Some(doc),
                Some(_) => {
                    return refuse(ChannelCode::ReadOnly, "the token only reads this document")
                }
                None => {
                    return refuse(
                        ChannelCode::Forbidden,
                        "the token grants no access to this document",
                    )
                }
            }
        }
        RequestOp::ListTrash => None,
        _ => {
            return refuse(
                ChannelCode::BadRequest,
                "ask this on the document's channel",
            )
        }
    };
    let result: Result<Reply, StoreError> = async {
        Ok(match (request.op, doc) {
            (RequestOp::Trash { .. }, Some(doc)) => {
                store.trash(doc.as_str(), now_ms()).await?;
                // After the commit: a room loading meanwhile is in the registry already, so
                // it gets this job, and a load that starts later reads the trash mark.
                server.rooms.submit_if_loaded(&doc, RoomJob::Trashed);
                tracing::info!(%doc, user = %claims.sub, "document moved to the trash");
                Reply::ok(id, ReplyBody::Done)
            }
            (RequestOp::Untrash { .. }, Some(doc)) => {
                if !store.untrash(doc.as_str()).await? {
                    return Ok(refuse(
                        ChannelCode::UnknownChannel,
                        "the document is not in the trash",
                    ));
                }
                tracing::info!(%doc, user = %claims.sub, "document restored from the trash");
                Reply::ok(id, ReplyBody::Done)
            }
            (RequestOp::Purge { .. }, Some(doc)) => {
                if store.purge(Some(doc.as_str()), u64::MAX).await?.is_empty() {
                    return Ok(refuse(
                        ChannelCode::UnknownChannel,
                        "the document is not in the trash",
                    ));
                }
                tracing::info!(%doc, user = %claims.sub, "document deleted for good");
                Reply::ok(id, ReplyBody::Done)
            }
            _ => {
                let entries = store
                    .list_trash()
                    .await?
                    .into_iter()
                    .filter(|(doc, _)| claims.access_for(doc).is_some())
                    .map(|(doc, trashed_ms)| TrashEntry {
                        doc,
                        trashed_ms,
                        purge_ms: trashed_ms.saturating_add(retention),
                    })
                    .collect();
                Reply::ok(id, ReplyBody::Trash(entries))
            }
        })
    }
    .await;
    result.unwrap_or_else(|err| {
        tracing::error!(error = %err, "trash request failed in storage");
        refuse(
            ChannelCode::StorageFailure,
            ChannelCode::StorageFailure.description(),
        )
    })
}

/// Deletes for good every document that has been in the trash for `retention`; returns their
/// IDs.
pub async fn purge_expired<S: Store>(
    store: &S,
    retention: Duration,
    now_ms: u64,
) -> Result<Vec<String>, StoreError> {
    store
        .purge(None, now_ms.saturating_sub(retention.as_millis() as u64))
        .await
}

/// Purges expired documents now and then every hour, for as long as the server runs.
pub(crate) async fn purge_loop<S: Store>(store: Arc<S>, retention: Duration) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        match purge_expired(store.as_ref(), retention, now_ms()).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => tracing::info!(
                documents = gone.len(),
                "purged documents whose time in the trash was up"
            ),
            Err(err) => tracing::warn!(error = %err, "purging the trash failed"),
        }
    }
}
