//! Awareness (docs/PROTOCOL.md §6.6): states reach the document's other subscribers, late
//! joiners get the current ones, and a subscriber that leaves is announced as removed.

use quire_protocol::varint::{write_string, write_varint};
use quire_protocol::ysync::{awareness_entries, decode_awareness};
use quire_protocol::{Access, ChannelId, Message};
use quire_tests::doc_peer::Peer;
use quire_tests::server_process::ServerProcess;

const CH: ChannelId = ChannelId(1);
const ALICE: u64 = 77;
const ALICE_STATE: &str = r##"{"user":{"name":"Alice","color":"#e06c75"},"cursor":null}"##;

/// An awareness update with one client's state.
fn awareness(client: u64, clock: u32, json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, 1);
    write_varint(&mut out, client);
    write_varint(&mut out, clock.into());
    write_string(&mut out, json);
    out
}

/// Every (client, clock, state) the peer received on `channel`, in order.
fn received(peer: &Peer, channel: ChannelId) -> Vec<(u64, u32, String)> {
    peer.docs[&channel]
        .awareness
        .iter()
        .flat_map(|payload| awareness_entries(&decode_awareness(payload).expect("decodes")))
        .collect()
}

#[tokio::test]
async fn presence_is_relayed_and_removed_when_its_owner_leaves() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let read_only = server.token(&["*"], false, "1h");
    let doc = "presence/doc";
    let mut alice = Peer::connect(&server, Some(&token)).await;
    alice.open_synced(CH, doc).await;
    let mut bob = Peer::connect(&server, Some(&token)).await;
    bob.open_synced(CH, doc).await;

    alice
        .client
        .send(CH, Message::Awareness(awareness(ALICE, 1, ALICE_STATE)))
        .await;
    let state = (ALICE, 1, ALICE_STATE.to_owned());
    bob.pump_until("Alice's state", |p| received(p, CH).contains(&state))
        .await;

    // A late joiner, even a read-only one, gets the current states right after OPENED.
    let mut carol = Peer::connect(&server, Some(&read_only)).await;
    assert_eq!(carol.open(CH, doc, Access::Read).await, Ok(Access::Read));
    carol
        .pump_until("the current states", |p| received(p, CH).contains(&state))
        .await;
    // Awareness works on read-only channels: Carol's state reaches Bob.
    carol
        .client
        .send(
            CH,
            Message::Awareness(awareness(99, 3, r#"{"user":{"name":"Carol"}}"#)),
        )
        .await;
    bob.pump_until("Carol's state", |p| {
        received(p, CH).iter().any(|(client, _, _)| *client == 99)
    })
    .await;
    assert_eq!(carol.docs[&CH].closed, None);

    // Alice's connection ends: the others receive her removal, state null at clock + 1.
    alice.client.close().await;
    let removal = (ALICE, 2, "null".to_owned());
    bob.pump_until("Alice's removal", |p| received(p, CH).contains(&removal))
        .await;
    carol
        .pump_until("Alice's removal", |p| received(p, CH).contains(&removal))
        .await;

    // Closing only the channel removes Carol's state too.
    let close = Message::Close {
        code: 1000,
        reason: "closed".into(),
    };
    carol.client.send(CH, close).await;
    bob.pump_until("Carol's removal", |p| {
        received(p, CH).contains(&(99, 4, "null".to_owned()))
    })
    .await;

    // A late joiner now sees nobody: removed states are not replayed.
    let mut dave = Peer::connect(&server, Some(&token)).await;
    dave.open_synced(CH, doc).await;
    assert!(received(&dave, CH).is_empty(), "{:?}", received(&dave, CH));
}

#[tokio::test]
async fn an_awareness_client_id_above_53_bits_closes_the_channel_with_4422() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut mallory = Peer::connect(&server, Some(&token)).await;
    mallory.open_synced(CH, "presence/hostile").await;
    let mut bob = Peer::connect(&server, Some(&token)).await;
    bob.open_synced(CH, "presence/hostile").await;
    mallory
        .client
        .send(CH, Message::Awareness(awareness(1 << 53, 1, "{}")))
        .await;
    mallory
        .pump_until("the refusal", |p| p.docs[&CH].closed.is_some())
        .await;
    assert_eq!(mallory.docs[&CH].closed, Some(4422));
    // Bob got nothing of it, and the document still works for him.
    bob.append(CH, "still here").await;
    bob.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    assert!(received(&bob, CH).is_empty());
}

/// An awareness update with many clients' states.
fn awareness_many(entries: impl ExactSizeIterator<Item = (u64, u32, String)>) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, entries.len() as u64);
    for (client, clock, json) in entries {
        write_varint(&mut out, client);
        write_varint(&mut out, clock.into());
        write_string(&mut out, &json);
    }
    out
}

#[tokio::test]
async fn presence_is_bounded_json_and_a_reader_publishes_only_its_own() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let read_only = server.token(&["*"], false, "1h");
    let doc = "presence/flood";
    let mut bob = Peer::connect(&server, Some(&token)).await;
    bob.open_synced(CH, doc).await;

    // 200,000 states (about 20 MB) from a read-only client: refused whole.
    let mut mallory = Peer::connect(&server, Some(&read_only)).await;
    assert_eq!(mallory.open(CH, doc, Access::Read).await, Ok(Access::Read));
    let flood = awareness_many(
        (0..200_000u32).map(|n| (1_000 + u64::from(n), 1, format!("{{\"n\":{n:>90}}}"))),
    );
    assert!(flood.len() > 20_000_000, "{} bytes", flood.len());
    mallory.client.send(CH, Message::Awareness(flood)).await;
    mallory
        .pump_until("the refusal", |p| p.docs[&CH].closed.is_some())
        .await;
    assert_eq!(mallory.docs[&CH].closed, Some(4422));

    // A state that is not JSON: refused too.
    let mut eve = Peer::connect(&server, Some(&token)).await;
    eve.open_synced(CH, doc).await;
    eve.client
        .send(CH, Message::Awareness(awareness(5, 1, "{not json")))
        .await;
    eve.pump_until("the refusal", |p| p.docs[&CH].closed.is_some())
        .await;
    assert_eq!(eve.docs[&CH].closed, Some(4422));

    // The reader's own presence is fine.
    let mut carol = Peer::connect(&server, Some(&read_only)).await;
    assert_eq!(carol.open(CH, doc, Access::Read).await, Ok(Access::Read));
    carol
        .client
        .send(CH, Message::Awareness(awareness(42, 1, "{\"me\":true}")))
        .await;
    let state = (42, 1, "{\"me\":true}".to_owned());
    bob.pump_until("Carol's state", |p| received(p, CH).contains(&state))
        .await;

    // Bob got nothing of the refused updates, and a newcomer is sent only Carol's state.
    assert_eq!(received(&bob, CH), vec![state.clone()]);
    let mut dave = Peer::connect(&server, Some(&token)).await;
    dave.open_synced(CH, doc).await;
    dave.pump_until("the current states", |p| received(p, CH).contains(&state))
        .await;
    let sent: usize = dave.docs[&CH].awareness.iter().map(Vec::len).sum();
    assert!(sent < 100, "a newcomer was sent {sent} bytes of presence");
}
