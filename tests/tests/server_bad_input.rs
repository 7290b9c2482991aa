//! Connection-level violations (docs/PROTOCOL.md §4.2, §7, §9): each closes the WebSocket with
//! its documented code, and the server goes on serving everyone else.

use quire_protocol::frame::kind;
use quire_protocol::{Access, ChannelId, DocId, Message};
use quire_tests::doc_peer::Peer;
use quire_tests::raw_client::{raw_frame, RawClient};
use quire_tests::server_process::ServerProcess;

const CH: ChannelId = ChannelId(1);
const MAX_FRAME: usize = 4096;
const MAX_MESSAGE: usize = 16384;

fn start() -> ServerProcess {
    ServerProcess::start(&[
        "--max-frame-size",
        &MAX_FRAME.to_string(),
        "--max-message-size",
        &MAX_MESSAGE.to_string(),
    ])
}

/// Connects (with HELLO), optionally opens CH for writing, sends `bytes` as one binary
/// message and returns the connection's close code.
async fn close_code_after(server: &ServerProcess, token: &str, open: bool, bytes: Vec<u8>) -> u16 {
    let mut client = RawClient::connect_hello(server, Some(token)).await;
    if open {
        assert_eq!(
            client.open(CH, "bad/doc", Access::Write).await,
            Ok(Access::Write)
        );
    }
    client.send_bytes(bytes).await;
    client.expect_close().await
}

#[tokio::test]
async fn malformed_frames_close_the_connection_with_their_code() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let ch = |c: u32| ChannelId(c);
    let cases: Vec<(&str, bool, Vec<u8>, u16)> = vec![
        ("empty frame", false, vec![], 1002),
        ("truncated channel varint", false, vec![0x80], 1002),
        ("channel varint with no kind", false, vec![0x01], 1002),
        ("unknown kind", false, raw_frame(ch(1), 0x7f, &[]), 1002),
        (
            "unknown kind on channel 0",
            false,
            raw_frame(ch(0), 0x05, &[]),
            1002,
        ),
        (
            "control kind on a document channel",
            false,
            raw_frame(ch(1), kind::PING, &[1]),
            1002,
        ),
        (
            "document kind on channel 0",
            false,
            raw_frame(ch(0), kind::SYNC, &[0, 0]),
            1002,
        ),
        (
            "PING with trailing bytes",
            false,
            raw_frame(ch(0), kind::PING, &[1, 2]),
            1002,
        ),
        (
            "PING with a truncated varint",
            false,
            raw_frame(ch(0), kind::PING, &[0x80]),
            1002,
        ),
        (
            "second HELLO",
            false,
            raw_frame(ch(0), kind::HELLO, &[1, 1, b'x']),
            1002,
        ),
        (
            "ACK from a client",
            true,
            raw_frame(ch(1), kind::ACK, &[1]),
            1002,
        ),
        (
            "OPEN with a non-UTF-8 document ID",
            false,
            raw_frame(ch(2), kind::OPEN, &[1, 2, 0xff, 0xfe]),
            1007,
        ),
        (
            "a frame above max_frame_size",
            true,
            raw_frame(ch(1), kind::SYNC, &vec![0; MAX_FRAME + 1]),
            1009,
        ),
    ];
    for (what, open, bytes, code) in cases {
        assert_eq!(
            close_code_after(&server, &token, open, bytes).await,
            code,
            "{what}"
        );
    }
    still_serving(&server, &token).await;
}

#[tokio::test]
async fn a_text_message_closes_with_1003() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    client
        .send_raw(tokio_tungstenite::tungstenite::Message::Text(
            "hello".into(),
        ))
        .await;
    assert_eq!(client.expect_close().await, 1003);
    still_serving(&server, &token).await;
}

#[tokio::test]
async fn a_frame_before_hello_closes_with_4010() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect(&server, Some(&token)).await.unwrap();
    let open = Message::Open {
        access: Access::Write,
        doc: quire_protocol::DocId::parse("early/doc", 256).unwrap(),
    };
    client.send(CH, open).await;
    assert_eq!(client.expect_close().await, 4010);

    let mut client = RawClient::connect(&server, Some(&token)).await.unwrap();
    client.send(ChannelId::CONTROL, Message::Ping(1)).await;
    assert_eq!(client.expect_close().await, 4010);
}

#[tokio::test]
async fn fragments_beyond_max_message_size_close_with_1009() {
    let server = start();
    let token = server.token(&["*"], true, "1h");

    // Control: a message of 3 frames within the limit is reassembled, applied and acked.
    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "big/doc").await;
    let text = "y".repeat(3 * MAX_FRAME);
    peer.insert(CH, 0, &text).await;
    peer.pump_until("the fragmented write acked", |p| {
        p.docs[&CH].acked == p.docs[&CH].writes
    })
    .await;

    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    client.open(CH, "big/doc", Access::Write).await.unwrap();
    let piece = vec![0u8; MAX_FRAME - 6];
    for _ in 0..=MAX_MESSAGE / piece.len() {
        client.send_frame(CH, kind::FRAGMENT, &piece).await;
    }
    assert_eq!(client.expect_close().await, 1009);

    // Nothing of it reached the document.
    let mut fresh = Peer::connect(&server, Some(&token)).await;
    fresh.open_synced(CH, "big/doc").await;
    assert_eq!(fresh.text(CH), text);
}

#[tokio::test]
async fn unfinished_messages_across_channels_beyond_max_message_size_close_with_1009() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    let channels: Vec<ChannelId> = (1..=4).map(ChannelId).collect();
    for (n, channel) in channels.iter().enumerate() {
        let doc = format!("interleaved/{n}");
        client.open(*channel, &doc, Access::Write).await.unwrap();
    }
    // Each channel's message stays under the limit; together they pass it.
    let piece = vec![0u8; MAX_FRAME - 6];
    let per_channel = MAX_MESSAGE / piece.len() / 2;
    assert!(per_channel * piece.len() * channels.len() > MAX_MESSAGE);
    for _ in 0..per_channel {
        for channel in &channels {
            client.send_frame(*channel, kind::FRAGMENT, &piece).await;
        }
    }
    assert_eq!(client.expect_close().await, 1009);
    still_serving(&server, &token).await;
}

#[tokio::test]
async fn close_inside_a_fragmented_message_closes_with_1002() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    client.open(CH, "frag/doc", Access::Write).await.unwrap();
    client.send_frame(CH, kind::FRAGMENT, &[0u8; 16]).await;
    client
        .send(
            CH,
            Message::Close {
                code: 1000,
                reason: String::new(),
            },
        )
        .await;
    assert_eq!(client.expect_close().await, 1002);
    still_serving(&server, &token).await;
}

#[tokio::test]
async fn open_inside_a_fragmented_message_closes_with_1002_not_4409() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    client.open(CH, "frag/doc", Access::Write).await.unwrap();
    client.send_frame(CH, kind::FRAGMENT, &[0u8; 16]).await;
    let doc = DocId::parse("frag/other", 256).unwrap();
    client
        .send(
            CH,
            Message::Open {
                access: Access::Write,
                doc,
            },
        )
        .await;
    assert_eq!(client.expect_close().await, 1002);
    still_serving(&server, &token).await;
}

#[tokio::test]
async fn unfinished_messages_are_timed_out_with_1008() {
    const HOLDERS: usize = 4;
    let server = ServerProcess::start(&[
        "--fragment-timeout-secs",
        "1",
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-timeout-ms",
        "5000",
    ]);
    let token = server.token(&["*"], false, "1h");
    let started = std::time::Instant::now();
    let mut holders = Vec::new();
    for n in 0..HOLDERS {
        let mut client = RawClient::connect_hello(&server, Some(&token)).await;
        let doc = format!("frag/held-{n}");
        client.open(CH, &doc, Access::Read).await.unwrap();
        // Most of a frame's worth of a message, never finished; the connection stays busy.
        client
            .send_frame(CH, kind::FRAGMENT, &vec![0u8; 512 * 1024])
            .await;
        holders.push(tokio::spawn(async move {
            loop {
                client.send(ChannelId::CONTROL, Message::Ping(1)).await;
                let next =
                    tokio::time::timeout(std::time::Duration::from_millis(100), client.recv());
                if let Ok(quire_tests::raw_client::Incoming::Closed(code, _)) = next.await {
                    return code;
                }
            }
        }));
    }
    for holder in holders {
        assert_eq!(holder.await.unwrap(), 1008);
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(1),
        "closed after {took:?}"
    );
    eprintln!("{HOLDERS} connections holding unfinished messages: all closed with 1008 after {took:?} (limit 1 s)");
    still_serving(&server, &server.token(&["*"], true, "1h")).await;
}

#[tokio::test]
async fn an_empty_fragment_closes_with_1002() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    client.open(CH, "frag/empty", Access::Write).await.unwrap();
    client.send_frame(CH, kind::FRAGMENT, &[]).await;
    assert_eq!(client.expect_close().await, 1002);
    still_serving(&server, &token).await;
}

#[tokio::test]
async fn a_hello_of_another_revision_or_over_1024_bytes_closes_with_1002() {
    let server = start();
    let token = server.token(&["*"], true, "1h");
    let hellos = [
        ("revision 2", 2, "quire-tests".to_owned()),
        ("revision 0", 0, "quire-tests".to_owned()),
        (
            "a 1,100-byte HELLO",
            quire_protocol::PROTOCOL_REVISION,
            "x".repeat(1100),
        ),
    ];
    for (what, revision, client_name) in hellos {
        let mut client = RawClient::connect(&server, Some(&token)).await.unwrap();
        let hello = Message::Hello(quire_protocol::Hello {
            revision,
            client: client_name,
        });
        client.send(ChannelId::CONTROL, hello).await;
        assert_eq!(client.expect_close().await, 1002, "{what}");
    }
    // A HELLO of exactly the documented bound is fine.
    let mut client = RawClient::connect(&server, Some(&token)).await.unwrap();
    let name = "y".repeat(1024 - 1 - 1 - 1 - 2);
    let frame = quire_protocol::Frame::control(Message::Hello(quire_protocol::Hello {
        revision: quire_protocol::PROTOCOL_REVISION,
        client: name,
    }))
    .encode();
    assert_eq!(frame.len(), 1024);
    client.send_bytes(frame).await;
    match client.recv().await {
        quire_tests::raw_client::Incoming::Frame(quire_protocol::Frame {
            message: Message::Welcome(_),
            ..
        }) => {}
        other => panic!("a 1,024-byte HELLO: expected WELCOME, got {other:?}"),
    }
    still_serving(&server, &token).await;
}

/// Another client can still connect, open a document, write and be acknowledged.
async fn still_serving(server: &ServerProcess, token: &str) {
    let mut peer = Peer::connect(server, Some(token)).await;
    peer.open_synced(CH, "bad/control").await;
    peer.append(CH, "fine").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
}
