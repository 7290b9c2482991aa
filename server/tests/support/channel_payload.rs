//! The check the `channel_payload` fuzz target (server/fuzz/) runs on every input, shared with
//! the regression tests in `payload_regressions.rs` so a finding replays through the same code.
//!
//! Input layout: repeated `[kind: u8][len: u16 little-endian][payload: len bytes]`; an even
//! kind is a SYNC payload, an odd one an AWARENESS payload; a short last record takes what is
//! left. Each payload is decoded, validated and applied to one room exactly as a connection
//! does (`connection::on_sync` / `on_awareness`: `decode_sync`, then `Room::answer_step1` or
//! `Room::apply` with the update bytes; `decode_awareness`, then `Room::relay_awareness`), with
//! the message size cap in force. Afterwards the room's state must encode, reload into a fresh
//! room as a restart would (snapshot path and update-log path) and reach the same state vector
//! and delete set.

use quire_protocol::yrs::updates::decoder::Decode;
use quire_protocol::yrs::{Doc, ReadTxn, Snapshot, Transact, Update};
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::{Access, ChannelId, ConnId, DocId};
use quire_server::connection::ConnHandle;
use quire_server::room::{Room, SubKey};
use quire_server::store::StoredDoc;

/// The cap on one message here: the connection refuses anything larger (1009) before the
/// room sees it. Smaller than the server's default so fuzzing stays fast.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// Runs `data` through a room; panics on any broken expectation.
pub(crate) fn check_channel_payload(data: &[u8]) {
    let room = Room::new(DocId::parse("fuzz", 256).unwrap());
    let from = SubKey {
        conn: ConnId(1),
        channel: ChannelId(1),
    };
    // Subscribed as a connection's channel is, so that its awareness is applied (relays go to
    // the other subscribers only: none here).
    let (conn, _queue) = ConnHandle::queue_only(from.conn, 16);
    conn.channel_opened(from.channel, 1);
    let _ = room.subscribe(from, conn, 1, Access::Write);
    let mut accepted = Vec::new();
    let mut rest = data;
    while let [kind, rest_after_kind @ ..] = rest {
        let (len, body) = match rest_after_kind {
            [lo, hi, body @ ..] => (u16::from_le_bytes([*lo, *hi]) as usize, body),
            body => (body.len(), &[][..]),
        };
        let len = len.min(body.len()).min(MAX_MESSAGE);
        let (payload, after) = body.split_at(len);
        rest = after;
        if kind % 2 == 0 {
            match ysync::decode_sync_with_references(payload) {
                Ok((SyncPayload::Step1(sv), _)) => {
                    // The answer is a valid step 2 that decodes again.
                    let answer = room.answer_step1(&sv);
                    assert!(ysync::decode_sync(&answer).is_ok(), "own step 2 refused");
                }
                Ok((SyncPayload::Step2(update) | SyncPayload::Update(update), references)) => {
                    let raw = ysync::update_bytes(payload);
                    if let Ok(true) = room.apply(from, (update, &references), raw, payload, |_| {})
                    {
                        accepted.push(raw.to_vec());
                    }
                }
                Err(_) => {}
            }
        } else if let Ok(update) = ysync::decode_awareness(payload) {
            // A refusal (PROTOCOL §6.6 limits) leaves the room as it was.
            let _ = room.relay_awareness(from, &update, payload);
        }
    }

    // What the persister would store reloads to the same document, either way it is stored.
    let state = room.encode_state();
    let want = snapshot(&room);
    let from_snapshot = Room::new(DocId::parse("fuzz", 256).unwrap());
    from_snapshot
        .load_stored(StoredDoc {
            snapshot: Some(state.clone()),
            updates: Vec::new(),
            ..StoredDoc::default()
        })
        .expect("the room's own state reloads");
    assert_eq!(snapshot(&from_snapshot), want, "snapshot reload differs");
    let from_log = Room::new(DocId::parse("fuzz", 256).unwrap());
    from_log
        .load_stored(StoredDoc {
            snapshot: None,
            updates: accepted,
            ..StoredDoc::default()
        })
        .expect("the logged updates reload");
    assert_eq!(snapshot(&from_log), want, "update-log reload differs");
    assert!(Update::decode_v1(&state).is_ok());
}

/// The room's document as state vector and delete set, read back from its encoded state.
fn snapshot(room: &Room) -> Snapshot {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(&room.encode_state()).unwrap())
        .unwrap();
    txn.snapshot()
}
