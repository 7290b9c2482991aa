//! Durable acknowledgements (docs/PROTOCOL.md §6.5): numbered per channel from its OPEN, and
//! never carried over to a later channel on the same ID.

use quire_protocol::{Access, ChannelId, Frame, Message};
use quire_tests::doc_peer::Peer;
use quire_tests::raw_client::Incoming;
use quire_tests::server_process::ServerProcess;

const CH: ChannelId = ChannelId(1);

#[tokio::test]
async fn a_reopened_channel_never_gets_the_previous_channels_acks() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    for round in 0..5 {
        peer.open_synced(CH, "ack/reopen").await;
        // Many writes, then CLOSE at once: their ACKs are still being committed.
        for n in 0..50 {
            peer.append(CH, &format!("[{round}.{n}]")).await;
        }
        let close = Message::Close {
            code: 1000,
            reason: "closed".into(),
        };
        peer.client.send(CH, close).await;
        // Until the reply, ACKs of this channel may arrive; after it, none may.
        loop {
            match peer.client.recv().await {
                Incoming::Frame(Frame {
                    channel,
                    message: Message::Close { code, .. },
                }) if channel == CH => {
                    assert_eq!(code, 1000);
                    break;
                }
                Incoming::Closed(code, reason) => panic!("connection closed: {code} {reason}"),
                Incoming::Frame(_) => {}
            }
        }
        // Reopen the same ID: Peer checks that every ACK is within the writes sent on it.
        peer.docs.remove(&CH);
        assert_eq!(
            peer.open(CH, "ack/reopen", Access::Write).await,
            Ok(Access::Write)
        );
        peer.pump_until("sync", |p| p.docs[&CH].synced).await;
        peer.append(CH, "!").await;
        peer.pump_until("the new channel's ACK", |p| {
            p.docs[&CH].acked == p.docs[&CH].writes
        })
        .await;
        peer.client
            .send(
                CH,
                Message::Close {
                    code: 1000,
                    reason: "closed".into(),
                },
            )
            .await;
        peer.client.expect_channel_close(CH).await;
        peer.docs.remove(&CH);
    }
}

#[tokio::test]
async fn a_close_is_answered_after_the_ack_of_every_write_before_it() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    for round in 0..5 {
        peer.open_synced(CH, "ack/close").await;
        // Writes, then CLOSE at once, before any ACK can have been read.
        for n in 0..50 {
            peer.append(CH, &format!("[{round}.{n}]")).await;
        }
        let writes = peer.docs[&CH].writes;
        let close = Message::Close {
            code: 1000,
            reason: "closed".into(),
        };
        peer.client.send(CH, close).await;
        let mut acked = 0;
        loop {
            match peer.client.recv().await {
                Incoming::Frame(Frame {
                    channel,
                    message: Message::Ack(seq),
                }) if channel == CH => acked = seq,
                Incoming::Frame(Frame {
                    channel,
                    message: Message::Close { code, .. },
                }) if channel == CH => {
                    assert_eq!(code, 1000);
                    break;
                }
                Incoming::Closed(code, reason) => panic!("connection closed: {code} {reason}"),
                Incoming::Frame(_) => {}
            }
        }
        assert_eq!(
            acked, writes,
            "round {round}: the reply CLOSE came after ACK {acked} of {writes} writes"
        );
        peer.docs.remove(&CH);
    }
}
