//! What the session core's events ask of the driver: publish the connection's state, open a
//! socket, and keep the documents (the y-protocols exchange, applying and storing the server's
//! updates, durable ACKs, awareness, request replies).

use std::collections::BTreeMap;
use std::time::Instant;

use quire_protocol::session::{ClientEvent, RequestFailure, Status};
use quire_protocol::ysync::{
    decode_awareness, decode_sync, encode_step1, encode_step2, update_bytes, SyncPayload,
};
use quire_protocol::{CloseCode, DocId, PayloadError, Reaction};
use yrs::{ReadTxn, Transact};

use quire_protocol::request::ReplyBody;

use super::{Driver, Waiter};
use crate::document::REMOTE_ORIGIN;
use crate::error::ClientError;
use crate::state::{ConnectionState, DocState};
use crate::store::LocalStore;

/// SYNC payloads at least this large (a whole document, reassembled from fragments) are
/// decoded on a blocking thread while the session keeps pinging (see `decode_keeping_alive`).
const LARGE_PAYLOAD: usize = 1 << 20;

impl<S: LocalStore> Driver<S> {
    pub(super) async fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Connect => self.connect(),
            ClientEvent::Status(status) => self.on_status(status),
            ClientEvent::Opened { doc, access } => {
                let Some(entry) = self.docs.get(&doc) else {
                    return;
                };
                entry.shared.granted.send_replace(Some(access));
                let step1 = encode_step1(&entry.shared.doc.transact().state_vector());
                let presence = entry.shared.present_awareness();
                self.core.send_sync(&doc, step1);
                if let Some(presence) = presence {
                    self.core.send_awareness(&doc, presence);
                }
            }
            ClientEvent::Step1 { doc, payload } => {
                let Some(entry) = self.docs.get(&doc) else {
                    return;
                };
                let remote = match decode_sync(&payload) {
                    Ok(SyncPayload::Step1(remote)) => remote,
                    _ => {
                        tracing::warn!(doc = %doc, "undecodable step 1 from the server");
                        return;
                    }
                };
                let diff = entry
                    .shared
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&remote);
                let through = entry.pending.back().copied().unwrap_or(0);
                self.core.answer_step1(&doc, encode_step2(diff), through);
            }
            ClientEvent::Update { doc, payload, .. } => self.on_update(doc, payload).await,
            ClientEvent::Awareness { doc, payload } => self.on_awareness(&doc, &payload),
            ClientEvent::Receiving { doc, received } => {
                if let Some(entry) = self.docs.get(&doc) {
                    entry
                        .shared
                        .state
                        .send_replace(DocState::Syncing { received });
                }
            }
            ClientEvent::Acked { doc, through } => {
                self.acknowledge(&doc, through).await;
                self.publish_doc(&doc);
            }
            ClientEvent::Offline { doc } => {
                if let Some(entry) = self.docs.get(&doc) {
                    entry.shared.granted.send_replace(None);
                    entry.shared.state.send_replace(DocState::Offline {
                        pending: entry.pending.len(),
                    });
                }
            }
            ClientEvent::Failed { doc, code, reason } => {
                tracing::warn!(doc = %doc, code, %reason, "the server closed the document");
                if let Some(entry) = self.docs.get(&doc) {
                    entry.shared.granted.send_replace(None);
                    entry
                        .shared
                        .state
                        .send_replace(DocState::Failed { code, reason });
                }
            }
            ClientEvent::Reply { id, result } => {
                let result = result.map_err(|failure| match failure {
                    RequestFailure::Refused { code, reason } => {
                        ClientError::RequestRefused { code, reason }
                    }
                    RequestFailure::BadReply(reason) => ClientError::BadReply(reason),
                });
                match self.requests.remove(&id) {
                    Some(Waiter::Reply(waiter)) => drop(waiter.send(result)),
                    Some(Waiter::Digest { doc, reply }) => {
                        let pair = result.and_then(|body| match body {
                            ReplyBody::Digest(server) => self
                                .docs
                                .get(&doc)
                                .map(|entry| entry.shared.digest_pair(server))
                                .ok_or(ClientError::NotOpen),
                            other => Err(ClientError::BadReply(format!(
                                "unexpected result {other:?}"
                            ))),
                        });
                        let _ = reply.send(pair);
                    }
                    None => {}
                }
            }
            // The waiter sees its sender dropped: offline.
            ClientEvent::Unanswered { id } => drop(self.requests.remove(&id)),
        }
    }

    fn on_status(&mut self, status: Status) {
        let state = match status {
            Status::Connecting { attempt } => ConnectionState::Connecting { attempt },
            Status::Connected { rtt } => ConnectionState::Connected { rtt },
            Status::Reconnecting {
                retry_in,
                attempt,
                last_code,
                reason,
            } => {
                tracing::debug!(code = last_code, %reason, "connection ended");
                if CloseCode::from_u16(last_code).reaction() == Reaction::ReportBugThenRetry {
                    tracing::warn!(code = last_code, %reason, "the server reported a protocol violation; this is a bug");
                }
                ConnectionState::Reconnecting {
                    retry_in,
                    attempt,
                    last_code,
                    reason,
                }
            }
            Status::Refused { reason } => ConnectionState::Refused { reason },
            Status::AuthFailed { reason } => ConnectionState::AuthFailed { reason },
            // Published with the certificate's fingerprint when the connect failed.
            Status::Untrusted => return,
            Status::Closed => ConnectionState::Closed,
        };
        self.publish(state);
    }

    /// The server's step 2 or an update: applied to the replica and kept in the store.
    async fn on_update(&mut self, doc: DocId, payload: Vec<u8>) {
        if !self.docs.contains_key(&doc) {
            return;
        }
        let (payload, decoded) = self.decode_keeping_alive(payload).await;
        let Some(entry) = self.docs.get(&doc) else {
            return;
        };
        let update = match decoded {
            Ok(SyncPayload::Step2(update) | SyncPayload::Update(update)) => update,
            Ok(SyncPayload::Step1(_)) => return,
            Err(err) => {
                tracing::warn!(doc = %doc, error = %err, "undecodable sync message from the server");
                return;
            }
        };
        if let Err(err) = entry
            .shared
            .doc
            .transact_mut_with(REMOTE_ORIGIN)
            .apply_update(update)
        {
            tracing::warn!(doc = %doc, error = %err, "server update did not apply");
        }
        self.publish_doc(&doc);
        self.store_remote(&doc, update_bytes(&payload)).await;
    }

    fn on_awareness(&mut self, doc: &DocId, payload: &[u8]) {
        let Some(entry) = self.docs.get(doc) else {
            return;
        };
        let Ok(update) = decode_awareness(payload) else {
            return;
        };
        let own = entry.shared.doc.client_id().get();
        entry
            .shared
            .others
            .send_modify(|others: &mut BTreeMap<u64, String>| {
                for (client, state) in &update.clients {
                    let client = client.get();
                    if client == own {
                        continue;
                    }
                    if &*state.json == "null" {
                        others.remove(&client);
                    } else {
                        others.insert(client, state.json.to_string());
                    }
                }
            });
    }

    /// Decodes a SYNC payload. Validating and decoding a whole large document takes long
    /// (seconds for 50 MB in a debug build), so a large payload is decoded on a blocking
    /// thread while the session keeps sending its pings: otherwise a client busy with a big
    /// sync goes silent and the server closes it with 4008, and the blocked worker thread
    /// stalls other tasks too.
    async fn decode_keeping_alive(
        &mut self,
        payload: Vec<u8>,
    ) -> (Vec<u8>, Result<SyncPayload, PayloadError>) {
        if payload.len() < LARGE_PAYLOAD {
            let decoded = decode_sync(&payload);
            return (payload, decoded);
        }
        let mut work = tokio::task::spawn_blocking(move || {
            let decoded = decode_sync(&payload);
            (payload, decoded)
        });
        let done = loop {
            let wake = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                done = &mut work => break done,
                _ = super::sleep_until_opt(wake) => {
                    // The socket is not read meanwhile, so the server's silence proves nothing.
                    let now = Instant::now();
                    self.core.note_read_activity(now);
                    self.core.handle_timeout(now);
                    self.transmit().await;
                }
            }
        };
        // The server's frames waited in the socket while we were busy: judge it from now on.
        self.core.note_read_activity(Instant::now());
        done.unwrap_or_else(|_| (Vec::new(), Err(PayloadError::DecoderPanicked)))
    }
}
