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
