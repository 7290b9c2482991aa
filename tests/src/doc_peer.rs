//! A peer holding yrs replicas of the documents it has open on one raw connection, speaking
//! the y-protocols exchange the spec describes: step 1 both ways, step 2 answers, live
//! updates, and cumulative ACKs counted per channel.

use std::collections::HashMap;
use std::time::Duration;

use quire_protocol::ysync::{decode_sync, encode_step1, encode_step2, encode_update, SyncPayload};
use quire_protocol::{Access, ChannelId, Frame, Message, Reassembler};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

use crate::raw_client::{Incoming, RawClient};
use crate::server_process::ServerProcess;
use crate::CONTENT;

/// One open document on the peer.
#[derive(Debug)]
pub struct PeerDoc {
    pub doc: Doc,
    /// Writes sent on this channel (the server numbers them the same way).
    pub writes: u64,
    /// Highest ACK received.
    pub acked: u64,
    /// The server's step 2 arrived.
    pub synced: bool,
    /// The channel was closed by the server with this code.
    pub closed: Option<u16>,
    /// Awareness payloads received.
    pub awareness: Vec<Vec<u8>>,
    /// The answer to OPEN: the access granted, or the refusal code.
    pub opened: Option<Result<Access, u16>>,
    /// Joins the server's fragmented messages (a large step 2 arrives in pieces).
    reassembler: Reassembler,
}

#[derive(Debug)]
pub struct Peer {
    pub client: RawClient,
    pub docs: HashMap<ChannelId, PeerDoc>,
    /// Set when the connection closed: its close code.
    pub closed: Option<u16>,
}

impl Peer {
    pub async fn connect(server: &ServerProcess, token: Option<&str>) -> Self {
        Self {
            client: RawClient::connect_hello(server, token).await,
            docs: HashMap::new(),
            closed: None,
        }
    }

    /// Opens `doc` on `channel` and starts the sync; returns the access granted or the refusal code.
    pub async fn open(
        &mut self,
        channel: ChannelId,
        doc: &str,
        access: Access,
    ) -> Result<Access, u16> {
        self.send_open(channel, doc, access).await;
        self.pump_until("OPEN answered", |p| p.docs[&channel].opened.is_some())
            .await;
        let answer = self.docs[&channel].opened.expect("answered");
        if answer.is_err() {
            self.docs.remove(&channel);
        }
        answer
    }

    /// Sends OPEN without waiting for the answer (the sync starts when OPENED arrives).
    pub async fn send_open(&mut self, channel: ChannelId, doc: &str, access: Access) {
        let doc_id = quire_protocol::DocId::parse(doc, self.client.limits.max_doc_id_len)
            .expect("valid doc id");
        self.docs.insert(
            channel,
            PeerDoc {
                doc: Doc::new(),
                writes: 0,
                acked: 0,
                synced: false,
                closed: None,
                awareness: Vec::new(),
                opened: None,
                reassembler: Reassembler::default(),
            },
        );
        self.client
            .send(
                channel,
                Message::Open {
                    access,
                    doc: doc_id,
                },
            )
            .await;
    }

    /// Opens and waits until synced.
    pub async fn open_synced(&mut self, channel: ChannelId, doc: &str) {
        self.open(channel, doc, Access::Write)
            .await
            .expect("open refused");
        self.pump_until("sync", |p| p.docs[&channel].synced).await;
    }

    /// Inserts `text` at `index` locally and sends the update; returns its write number.
    pub async fn insert(&mut self, channel: ChannelId, index: u32, text: &str) -> u64 {
        let doc = &mut self.docs.get_mut(&channel).expect("open channel").doc;
        let update = {
            let content = doc.get_or_insert_text(CONTENT);
            let mut txn = doc.transact_mut();
            content.insert(&mut txn, index, text);
            txn.encode_update_v1()
        };
        self.send_update(channel, update).await
    }

    /// Appends `text` at the end of the local text.
    pub async fn append(&mut self, channel: ChannelId, text: &str) -> u64 {
        let len = self.text(channel).chars().count() as u32;
        self.insert(channel, len, text).await
    }

    /// Sends a raw v1 update as a SYNC update message; returns its write number.
    pub async fn send_update(&mut self, channel: ChannelId, update: Vec<u8>) -> u64 {
        let entry = self.docs.get_mut(&channel).expect("open channel");
        entry.writes += 1;
        let seq = entry.writes;
        self.client
            .send(channel, Message::Sync(encode_update(update)))
            .await;
        seq
    }

    /// Length of the text in yrs units, without building the string (cheap on large texts).
    pub fn text_len(&self, channel: ChannelId) -> u32 {
        let doc = &self.docs[&channel].doc;
        let content = doc.get_or_insert_text(CONTENT);
        let txn = doc.transact();
        content.len(&txn)
    }

    /// The state digest of the replica on `channel` (PROTOCOL §6.10).
    pub fn digest(&self, channel: ChannelId) -> quire_protocol::StateDigest {
        quire_protocol::StateDigest::of(&self.docs[&channel].doc.transact())
    }

    pub fn text(&self, channel: ChannelId) -> String {
        let doc = &self.docs[&channel].doc;
        let content = doc.get_or_insert_text(CONTENT);
        let txn = doc.transact();
        content.get_string(&txn)
    }

    /// Handles one incoming message. Returns false once the connection is closed.
    pub async fn pump(&mut self) -> bool {
        if self.closed.is_some() {
            return false;
        }
        match self.client.recv().await {
            Incoming::Closed(code, _) => {
                self.closed = Some(code);
                false
            }
            Incoming::Frame(frame) => {
                self.handle(frame).await;
                true
            }
        }
    }

    /// Handles every message that has already arrived, without waiting for more. Returns
    /// false once the connection is closed.
    pub async fn pump_ready(&mut self) -> bool {
        loop {
            if self.closed.is_some() {
                return false;
            }
            // Polls once: `recv` keeps its partial state in the WebSocket stream.
            match tokio::time::timeout(Duration::ZERO, self.client.recv()).await {
                Ok(Incoming::Closed(code, _)) => self.closed = Some(code),
                Ok(Incoming::Frame(frame)) => self.handle(frame).await,
                Err(_) => return true,
            }
        }
    }

    async fn handle(&mut self, Frame { channel, message }: Frame) {
        let Some(entry) = self.docs.get_mut(&channel) else {
            return;
        };
        let message = match message {
            message @ (Message::Sync(_) | Message::Awareness(_) | Message::Fragment(_)) => {
                let max = self.client.limits.max_message_size;
                match entry
                    .reassembler
                    .push(message, max)
                    .expect("server fragments")
                {
                    Some(whole) => whole,
                    None => return,
                }
            }
            other => other,
        };
        match message {
            Message::Sync(payload) => {
                match decode_sync(&payload).expect("server sync payload decodes") {
                    SyncPayload::Step1(remote) => {
                        let diff = entry.doc.transact().encode_state_as_update_v1(&remote);
                        entry.writes += 1;
                        self.client
                            .send(channel, Message::Sync(encode_step2(diff)))
                            .await;
                    }
                    SyncPayload::Step2(update) => {
                        entry
                            .doc
                            .transact_mut()
                            .apply_update(update)
                            .expect("applies");
                        entry.synced = true;
                    }
                    SyncPayload::Update(update) => {
                        entry
                            .doc
                            .transact_mut()
                            .apply_update(update)
                            .expect("applies");
                    }
                }
            }
            Message::Ack(seq) => {
                assert!(
                    seq >= entry.acked,
                    "acks are cumulative: {seq} after {}",
                    entry.acked
                );
                assert!(
                    seq <= entry.writes,
                    "ack {seq} for a write not sent (sent {})",
                    entry.writes
                );
                entry.acked = seq;
            }
            Message::Opened { access } => {
                entry.opened = Some(Ok(access));
                let step1 = encode_step1(&entry.doc.transact().state_vector());
                self.client.send(channel, Message::Sync(step1)).await;
            }
            Message::Close { code, .. } if entry.opened.is_none() => entry.opened = Some(Err(code)),
            // The server closed an open channel: reply so that the ID is released (§6.3).
            Message::Close { code, .. } if entry.closed.is_none() => {
                entry.closed = Some(code);
                let reply = Message::Close {
                    code: 1000,
                    reason: "closed".into(),
                };
                self.client.send(channel, reply).await;
            }
            Message::Awareness(payload) => entry.awareness.push(payload),
            _ => {}
        }
    }

    /// Pumps until `done` holds, or fails after the deadline.
    pub async fn pump_until(&mut self, what: &str, done: impl Fn(&Peer) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(self) {
            // PINGs keep `recv` waiting without returning: bound the wait here too.
            let pumped = tokio::time::timeout_at(deadline, self.pump())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            assert!(
                pumped || done(self),
                "connection closed ({:?}) waiting for {what}",
                self.closed
            );
        }
    }

    /// The full state of a channel's replica as a v1 update.
    pub fn state(&self, channel: ChannelId) -> Vec<u8> {
        self.docs[&channel]
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }
}

/// A yrs update inserting `text` at the start of a fresh doc with the given client ID.
pub fn standalone_insert(client_id: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client_id);
    let content = doc.get_or_insert_text(CONTENT);
    let mut txn = doc.transact_mut();
    content.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// Keeps `Encode` in use for callers that build updates by hand.
pub fn encode_state_vector(sv: &StateVector) -> Vec<u8> {
    sv.encode_v1()
}
