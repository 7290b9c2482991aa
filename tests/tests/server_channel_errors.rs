//! Channel errors (docs/PROTOCOL.md §6.8): each closes or refuses only the channel concerned,
//! with its documented code; the connection, its other channels and the document's other
//! subscribers carry on, and nothing of a refused write is applied or stored.

use quire_protocol::frame::kind;
use quire_protocol::varint::write_varint;
use quire_protocol::{Access, ChannelId, Frame, Message};
use quire_tests::db_probe;
use quire_tests::doc_peer::{standalone_insert, Peer};
use quire_tests::raw_client::{Incoming, RawClient};
use quire_tests::server_process::ServerProcess;
use yrs::ReadTxn;
use yrs::Transact;

const CH: ChannelId = ChannelId(1);
const OTHER: ChannelId = ChannelId(2);

/// v1 updates the server must refuse with 4422.
fn hostile_updates() -> Vec<(&'static str, Vec<u8>)> {
    // Claims ~47.6M client groups in 4 bytes (a 2.7 GB reservation in yrs 0.28.1).
    let huge_count = vec![0xbd, 0x95, 0xa7, 0x16];
    let valid = standalone_insert(7, "a perfectly good insert");
    let truncated = valid[..valid.len() - 6].to_vec();
    // One struct from client 2^60: above 53 bits, a debug_assert in yrs.
    let mut wide_client = vec![0x01, 0x01];
    write_varint(&mut wide_client, 1 << 60);
    wide_client.extend_from_slice(&[0x00, 0x04, 0x01, 0x01, 0x41, 0x01, 0x41, 0x00]);
    vec![
        ("bd 95 a7 16", huge_count),
        ("truncated update", truncated),
        ("client ID above 2^53", wide_client),
    ]
}

#[tokio::test]
async fn an_undecodable_update_closes_its_channel_with_4422_and_nothing_else() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let doc = "hostile/doc";
    let mut attacker = Peer::connect(&server, Some(&token)).await;
    attacker.open_synced(OTHER, "hostile/other").await;
    let mut writer = Peer::connect(&server, Some(&token)).await;
    writer.open_synced(CH, doc).await;
    let mut reader = Peer::connect(&server, Some(&token)).await;
    reader.open_synced(CH, doc).await;

    for (n, (what, update)) in hostile_updates().into_iter().enumerate() {
        let channel = ChannelId(10 + n as u32);
        attacker.open_synced(channel, doc).await;
        attacker.send_update(channel, update.clone()).await;
        attacker
            .pump_until(what, |p| p.docs[&channel].closed.is_some())
            .await;
        assert_eq!(attacker.docs[&channel].closed, Some(4422), "{what}");
        assert!(
            attacker.docs[&channel].acked < 2,
            "{what}: the write was acknowledged"
        );

        // The same connection's other channel keeps syncing.
        attacker.append(OTHER, &format!("[other {n}]")).await;
        attacker
            .pump_until("the other channel's ACK", |p| {
                p.docs[&OTHER].acked == p.docs[&OTHER].writes
            })
            .await;
        // The document's other subscribers keep receiving.
        let marker = format!("[after {what}]");
        writer.append(CH, &marker).await;
        reader
            .pump_until("the writer's edit", |p| p.text(CH).contains(&marker))
            .await;
        assert!(attacker.closed.is_none() && reader.closed.is_none());
    }
    let text = reader.text(CH);
    let state_vector = reader.docs[&CH].doc.transact().state_vector();
    writer
        .pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;

    // Nothing of the hostile updates was stored: the restarted server holds exactly what the
    // reader saw, and no stored blob is one of them.
    server.terminate();
    server.restart();
    let mut fresh = Peer::connect(&server, Some(&token)).await;
    fresh.open_synced(CH, doc).await;
    assert_eq!(fresh.text(CH), text);
    assert_eq!(fresh.docs[&CH].doc.transact().state_vector(), state_vector);
    let stored = db_probe::stored_blobs(&server.db_path(), doc).await;
    for (what, update) in hostile_updates() {
        assert!(!stored.contains(&update), "{what} was stored");
    }
}

#[tokio::test]
async fn a_write_on_a_read_only_channel_closes_it_with_4405_and_is_not_applied() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let doc = "readonly/doc";
    let mut viewer = Peer::connect(&server, Some(&token)).await;
    // A token with write rights may still open for reading (§6.2).
    assert_eq!(viewer.open(CH, doc, Access::Read).await, Ok(Access::Read));
    viewer.pump_until("sync", |p| p.docs[&CH].synced).await;
    let mut writer = Peer::connect(&server, Some(&token)).await;
    writer.open_synced(CH, doc).await;
    let mut reader = Peer::connect(&server, Some(&token)).await;
    reader.open_synced(CH, doc).await;

    viewer.append(CH, "[forbidden]").await;
    viewer
        .pump_until("the refusal", |p| p.docs[&CH].closed.is_some())
        .await;
    assert_eq!(viewer.docs[&CH].closed, Some(4405));
    assert_eq!(viewer.docs[&CH].acked, 0);

    // Relays keep the order of application: had the write been applied, the reader would
    // see it before the writer's later edit.
    writer.append(CH, "[allowed]").await;
    reader
        .pump_until("the writer's edit", |p| p.text(CH).contains("[allowed]"))
        .await;
    assert_eq!(reader.text(CH), "[allowed]");
    writer
        .pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;

    server.terminate();
    server.restart();
    let mut fresh = Peer::connect(&server, Some(&token)).await;
    fresh.open_synced(CH, doc).await;
    assert_eq!(fresh.text(CH), "[allowed]");
}

#[tokio::test]
async fn channel_misuse_gets_its_code_and_the_connection_carries_on() {
    let server = ServerProcess::start(&["--max-channels", "2"]);
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;

    // A frame on a channel that is not open: 4404.
    client
        .send(ChannelId(7), Message::Sync(vec![0, 1, 0]))
        .await;
    assert_eq!(client.expect_channel_close(ChannelId(7)).await, 4404);

    // Bad OPENs are refused with 4400: empty ID, control character, too long, bad access.
    let long = "x".repeat(257);
    let refused: [(&str, Vec<u8>); 4] = [
        ("empty document ID", vec![1, 0]),
        ("control character", [&[1u8, 3][..], b"a\x07b"].concat()),
        (
            "257-byte document ID",
            [&[1u8, 0x81, 0x02][..], long.as_bytes()].concat(),
        ),
        ("access byte 2", [&[2u8, 3][..], b"abc"].concat()),
    ];
    for (what, body) in refused {
        client.send_frame(ChannelId(3), kind::OPEN, &body).await;
        assert_eq!(
            client.expect_channel_close(ChannelId(3)).await,
            4400,
            "{what}"
        );
    }

    // Beyond --max-channels: 4429, and the ID is free again at once.
    assert_eq!(
        client.open(CH, "misuse/a", Access::Write).await,
        Ok(Access::Write)
    );
    assert_eq!(
        client.open(OTHER, "misuse/b", Access::Write).await,
        Ok(Access::Write)
    );
    assert_eq!(
        client.open(ChannelId(3), "misuse/c", Access::Write).await,
        Err(4429)
    );

    // A second OPEN on an open channel: 4409 on that channel.
    let doc = quire_protocol::DocId::parse("misuse/a", 256).unwrap();
    let open = Message::Open {
        access: Access::Write,
        doc,
    };
    client.send(CH, open).await;
    assert_eq!(client.expect_channel_close(CH).await, 4409);
    // Replying frees the ID; so a third document now fits.
    client.send(CH, close_1000()).await;
    assert_eq!(
        client.open(ChannelId(3), "misuse/c", Access::Write).await,
        Ok(Access::Write)
    );
    assert_eq!(client.open(CH, "misuse/a", Access::Write).await, Err(4429));
    client.close().await;

    let metrics = server.metrics().await;
    for code in [4400, 4404, 4409, 4429] {
        let series = format!("quire_channel_closes_total{{code=\"{code}\"}}");
        let count = quire_tests::http_probe::metric(&metrics, &series).unwrap_or(0.0);
        assert!(count >= 1.0, "{series} = {count}");
    }
}

#[tokio::test]
async fn more_than_100_channel_errors_close_the_connection_with_1008() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    for n in 0..100 {
        let channel = ChannelId(100 + n);
        client.send(channel, Message::Sync(vec![0, 1, 0])).await;
        assert_eq!(client.expect_channel_close(channel).await, 4404);
    }
    // 100 errors are still within the budget.
    assert_eq!(
        client.open(CH, "budget/doc", Access::Write).await,
        Ok(Access::Write)
    );
    client
        .send(ChannelId(999), Message::Sync(vec![0, 1, 0]))
        .await;
    // The 101st error's CLOSE is queued before the decision, so it goes out first (§5.3).
    let mut refused = false;
    let code = loop {
        match client.recv().await {
            Incoming::Frame(Frame {
                channel: ChannelId(999),
                message: Message::Close { code, .. },
            }) => {
                assert_eq!(code, 4404);
                refused = true;
            }
            Incoming::Frame(_) => {} // the open channel's sync
            Incoming::Closed(code, _) => break code,
        }
    };
    assert!(
        refused,
        "the CLOSE 4404 queued before the 1008 was not sent"
    );
    assert_eq!(code, 1008);
}

fn close_1000() -> Message {
    Message::Close {
        code: 1000,
        reason: "closed".into(),
    }
}
