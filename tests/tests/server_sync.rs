//! Server scenarios: concurrent editing, late joiners, many documents on one connection.

use quire_protocol::{Access, ChannelId};
use quire_tests::doc_peer::Peer;
use quire_tests::server_process::ServerProcess;

const CH: ChannelId = ChannelId(1);

#[tokio::test]
async fn two_clients_converge_and_a_late_joiner_gets_everything() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["team/*"], true, "1h");
    let mut alice = Peer::connect(&server, Some(&token)).await;
    let mut bob = Peer::connect(&server, Some(&token)).await;
    alice.open_synced(CH, "team/notes").await;
    bob.open_synced(CH, "team/notes").await;

    // Concurrent edits: both type before seeing each other's.
    for i in 0..20 {
        alice.insert(CH, 0, &format!("a{i} ")).await;
        bob.insert(CH, 0, &format!("b{i} ")).await;
    }
    alice
        .pump_until("alice acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    bob.pump_until("bob acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    alice
        .pump_until("alice has bob's edits", |p| {
            p.text(CH).matches('b').count() == 20
        })
        .await;
    bob.pump_until("bob has alice's edits", |p| {
        p.text(CH).matches('a').count() == 20
    })
    .await;
    assert_eq!(alice.text(CH), bob.text(CH));

    let mut carol = Peer::connect(&server, Some(&token)).await;
    carol.open_synced(CH, "team/notes").await;
    assert_eq!(carol.text(CH), alice.text(CH));
}

#[tokio::test]
async fn one_connection_holds_200_documents() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut writer = Peer::connect(&server, Some(&token)).await;
    let mut reader = Peer::connect(&server, Some(&token)).await;
    for i in 1..=200u32 {
        let doc = format!("doc-{i}");
        writer.send_open(ChannelId(i), &doc, Access::Write).await;
        reader.send_open(ChannelId(i), &doc, Access::Write).await;
    }
    writer
        .pump_until("all synced", |p| p.docs.values().all(|d| d.synced))
        .await;
    reader
        .pump_until("all synced", |p| p.docs.values().all(|d| d.synced))
        .await;
    for i in 1..=200u32 {
        writer
            .insert(ChannelId(i), 0, &format!("text of {i}"))
            .await;
    }
    writer
        .pump_until("all acked", |p| {
            p.docs.values().all(|d| d.acked == d.writes)
        })
        .await;
    reader
        .pump_until("every document arrived", |p| {
            (1..=200u32).all(|i| p.text(ChannelId(i)) == format!("text of {i}"))
        })
        .await;
}

#[tokio::test]
async fn a_sync_sent_before_opened_is_handled_as_if_after_it() {
    use quire_protocol::{Frame, Message};
    use quire_tests::raw_client::{Incoming, RawClient};

    let server = ServerProcess::start(&[]);
    let token = server.token(&["team/*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    let doc = quire_protocol::DocId::parse("team/early", 256).unwrap();
    let update = quire_tests::doc_peer::standalone_insert(42, "sent early");
    // OPEN and a write back to back, without waiting for OPENED (§6.2 says not to).
    let open = Message::Open {
        access: Access::Write,
        doc,
    };
    client.send(CH, open).await;
    let write = Message::Sync(quire_protocol::ysync::encode_update(update));
    client.send(CH, write.clone()).await;
    let (mut opened, mut acked) = (false, 0);
    while acked < 1 {
        match client.recv().await {
            Incoming::Frame(Frame {
                message: Message::Opened { access },
                ..
            }) => {
                assert_eq!(access, Access::Write);
                opened = true;
            }
            Incoming::Frame(Frame {
                message: Message::Ack(seq),
                ..
            }) => {
                assert!(opened, "ACK before OPENED");
                acked = seq;
            }
            Incoming::Frame(Frame {
                message: Message::Close { code, .. },
                ..
            }) => panic!("the early write was refused with {code}"),
            Incoming::Frame(_) => {}
            Incoming::Closed(code, reason) => panic!("closed: {code} {reason}"),
        }
    }
    assert_eq!(acked, 1, "the early write is write 1");
    let mut reader = Peer::connect(&server, Some(&token)).await;
    reader.open_synced(CH, "team/early").await;
    assert_eq!(reader.text(CH), "sent early");

    // On a refused OPEN the same frame finds no channel: CLOSE 4403, then 4404.
    let other = quire_protocol::DocId::parse("private/x", 256).unwrap();
    let channel = ChannelId(2);
    client
        .send(
            channel,
            Message::Open {
                access: Access::Write,
                doc: other,
            },
        )
        .await;
    client.send(channel, write).await;
    assert_eq!(client.expect_channel_close(channel).await, 4403);
    assert_eq!(client.expect_channel_close(channel).await, 4404);
}

#[test]
fn the_text_lives_in_the_root_text_named_content_everywhere() {
    // PROTOCOL §6.4 names it; the Rust client, the desktop UI and the test peers use it.
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = std::fs::read_to_string(format!("{root}/../docs/PROTOCOL.md")).unwrap();
    assert!(spec.contains("root-level `Y.Text` named `content` (`ydoc.getText('content')`)"));
    assert_eq!(quire_client::CONTENT, "content");
    assert_eq!(quire_tests::CONTENT, "content");
    let bridge = std::fs::read_to_string(format!("{root}/../ui/src/sync/bridge.ts")).unwrap();
    assert!(
        bridge.contains(r#"getText("content")"#),
        "the UI's root text"
    );
}
