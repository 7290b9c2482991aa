//! Servers sharing a PostgreSQL database pass each other's updates through Redis, each a
//! process of the test's own on loopback. With Redis killed, edits still reach the other
//! server's clients (by the database check) and `/healthz` says it is degraded; with Redis
//! back, they travel through it again. The bound these tests hold delivery to is the peers'
//! wait for each edit (30 s, `Peer::pump_until`); with the 100 ms database check used here,
//! edits arrive within a few hundred milliseconds. Afterwards every copy holds the same state
//! digest.

use quire_protocol::{ChannelId, Message};
use quire_tests::cluster::{until_on_redis, Backends, SECRET};
use quire_tests::doc_peer::Peer;
use quire_tests::http_probe;
use quire_tests::proxy::Proxy;
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);
const DOC: &str = "cluster/doc";

/// Alice (on one server) and Bob (on the other) each add a mark in turn; each waits until
/// the other's mark arrived.
async fn exchange(alice: &mut Peer, bob: &mut Peer, round: &str, count: usize) {
    for n in 0..count {
        let mark = format!("<{round}-a{n}>");
        alice.append(CH, &mark).await;
        bob.pump_until(&mark, |p| p.text(CH).contains(&mark)).await;
        let mark = format!("<{round}-b{n}>");
        bob.append(CH, &mark).await;
        alice
            .pump_until(&mark, |p| p.text(CH).contains(&mark))
            .await;
    }
}

/// Alice and Bob hold the same text, with each mark of each `(round, count)` of
/// [`exchange`] exactly once.
fn assert_each_mark_once(alice: &Peer, bob: &Peer, rounds: &[(&str, usize)]) {
    let text = alice.text(CH);
    assert_eq!(bob.text(CH), text);
    for (round, count) in rounds {
        for n in 0..*count {
            for who in ["a", "b"] {
                let mark = format!("<{round}-{who}{n}>");
                assert_eq!(text.matches(&mark).count(), 1, "{mark} in {text}");
            }
        }
    }
}

async fn healthz(server: &ServerProcess) -> String {
    let response = http_probe::get(server.addr, server.tls(), "/healthz").await;
    assert_eq!(response.status, 200);
    response.body
}

#[tokio::test]
async fn redis_carries_updates_between_servers_and_its_loss_falls_back_to_the_database() {
    let mut backends = Backends::start("cluster").await;
    // The database is checked every 100 ms without Redis, every 800 ms with it.
    let flags = backends.flags(&["--shared-poll-ms", "100", "--no-auth"]);
    let one = ServerProcess::start(&flags);
    let two = ServerProcess::start(&flags);
    until_on_redis(&[&one, &two]).await;
    for server in [&one, &two] {
        assert_eq!(healthz(server).await.trim(), "ok");
    }
    let mut alice = Peer::connect(&one, None).await;
    let mut bob = Peer::connect(&two, None).await;
    alice.open_synced(CH, DOC).await;
    bob.open_synced(CH, DOC).await;

    // A document only the first server has loaded: its updates go out on its own channel,
    // which the second does not follow.
    const ELSEWHERE: ChannelId = ChannelId(2);
    alice.open_synced(ELSEWHERE, "cluster/elsewhere").await;
    for n in 0..5 {
        alice.append(ELSEWHERE, &format!("<elsewhere-{n}>")).await;
    }
    alice
        .pump_until("the other document's writes acked", |p| {
            p.docs[&ELSEWHERE].acked == p.docs[&ELSEWHERE].writes
        })
        .await;

    exchange(&mut alice, &mut bob, "redis", 10).await;
    // Every one of the 10 updates each server stored reached the other through Redis, and
    // nothing else did: the second server received the shared document's updates alone
    // (published after the other document's, so they would have arrived before).
    assert!(one.metric("quire_redis_published_total").await >= 15.0);
    assert_eq!(two.metric("quire_redis_received_total").await, 10.0);
    assert!(one.metric("quire_redis_received_total").await >= 10.0);
    assert!(two.metric("quire_redis_receive_lag_seconds_count").await >= 10.0);
    assert!(one.metric("quire_redis_publish_lag_seconds_count").await >= 10.0);

    // Redis gone: writes are still acknowledged, and edits still arrive, from the database.
    backends.redis.kill9();
    for server in [&one, &two] {
        wait::until("/healthz to say Redis is gone", wait::DEADLINE, || async {
            healthz(server).await.contains("degraded").then_some(())
        })
        .await;
        assert_eq!(server.metric("quire_redis_up").await, 0.0);
    }
    let received = two.metric("quire_redis_received_total").await;
    exchange(&mut alice, &mut bob, "no-redis", 5).await;
    assert_eq!(two.metric("quire_redis_received_total").await, received);
    assert!(two.metric("quire_remote_catch_ups_total").await >= 5.0);
    alice
        .pump_until("Alice's writes acked", |p| {
            p.docs[&CH].acked == p.docs[&CH].writes
        })
        .await;

    // Redis back (empty): both servers reconnect and updates travel through it again.
    backends.redis.restart();
    until_on_redis(&[&one, &two]).await;
    let received = two.metric("quire_redis_received_total").await;
    exchange(&mut alice, &mut bob, "redis-again", 5).await;
    assert!(two.metric("quire_redis_received_total").await >= received + 5.0);

    assert_each_mark_once(
        &alice,
        &bob,
        &[("redis", 5), ("no-redis", 5), ("redis-again", 5)],
    );
    // Both clients, both servers and PostgreSQL hold the same state.
    backends
        .until_peers_converged(&[&one, &two], DOC, CH, &[&alice, &bob])
        .await;
}

/// A network split between one server and Redis (a proxy of the test's own between them stops
/// forwarding, sockets left open): that server counts Redis as down and says so, the other
/// does not; edits still travel both ways, through the database check. Healed, the split
/// server reconnects and updates travel through Redis again.
#[tokio::test]
async fn a_split_between_one_server_and_redis_falls_back_for_that_server_alone() {
    let backends = Backends::start("split").await;
    let proxy = Proxy::start(backends.redis.addr()).await;
    let through_proxy = format!("redis://{}", proxy.addr);
    let common = ["--shared-poll-ms", "100", "--no-auth"];
    let mut split_flags = vec!["--database-url", backends.database_url.as_str()];
    split_flags.extend(["--redis-url", through_proxy.as_str(), "--secret", SECRET]);
    split_flags.extend(common);
    let one = ServerProcess::start(&split_flags);
    let two = ServerProcess::start(&backends.flags(&common));
    until_on_redis(&[&one, &two]).await;
    let mut alice = Peer::connect(&one, None).await;
    let mut bob = Peer::connect(&two, None).await;
    alice.open_synced(CH, DOC).await;
    bob.open_synced(CH, DOC).await;
    exchange(&mut alice, &mut bob, "joined", 3).await;

    proxy.stall();
    wait::until(
        "the split server to find Redis silent",
        wait::DEADLINE,
        || async { healthz(&one).await.contains("degraded").then_some(()) },
    )
    .await;
    assert_eq!(
        healthz(&two).await.trim(),
        "ok",
        "the other server still reaches Redis"
    );
    exchange(&mut alice, &mut bob, "split", 5).await;

    // Healed: the stalled connections are dropped and the server connects again.
    proxy.reset_all();
    proxy.resume();
    until_on_redis(&[&one]).await;
    let received = one.metric("quire_redis_received_total").await;
    exchange(&mut alice, &mut bob, "healed", 5).await;
    assert!(one.metric("quire_redis_received_total").await >= received + 5.0);

    assert_each_mark_once(&alice, &bob, &[("joined", 3), ("split", 5), ("healed", 5)]);
    backends
        .until_peers_converged(&[&one, &two], DOC, CH, &[&alice, &bob])
        .await;
}

/// A server with Redis hears of other servers' presence every second (and expires it every
/// second): that traffic must not keep a document nobody on it has open loaded. Closed on
/// one server while another server's client keeps editing it, the document is unloaded after
/// the idle delay.
#[tokio::test]
async fn a_document_closed_here_unloads_while_other_servers_keep_it_busy() {
    let backends = Backends::start("idle").await;
    let one = ServerProcess::start(&backends.flags(&["--no-auth", "--idle-unload-ms", "300"]));
    let two = ServerProcess::start(&backends.flags(&["--no-auth"]));
    until_on_redis(&[&one, &two]).await;
    let mut alice = Peer::connect(&one, None).await;
    let mut bob = Peer::connect(&two, None).await;
    alice.open_synced(CH, DOC).await;
    bob.open_synced(CH, DOC).await;
    exchange(&mut alice, &mut bob, "open", 2).await;
    alice.client.close().await;

    // Bob edits on, with presence, through the idle delay and past it, each edit acknowledged
    // before the next.
    let deadline = std::time::Instant::now() + wait::DEADLINE;
    let mut n = 0;
    while one.metric("quire_documents_loaded").await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the document stayed loaded on the first server"
        );
        n += 1;
        bob.append(CH, &format!("<busy-{n}>")).await;
        let presence = awareness(77, n, r#"{"user":{"name":"Bob"}}"#);
        bob.client.send(CH, Message::Awareness(presence)).await;
        bob.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
            .await;
    }
}

/// One awareness state, as y-protocols encodes an update: count, client ID, clock, JSON.
fn awareness(client: u64, clock: u64, json: &str) -> Vec<u8> {
    use quire_protocol::varint::{write_string, write_varint};
    let mut out = Vec::new();
    write_varint(&mut out, 1);
    write_varint(&mut out, client);
    write_varint(&mut out, clock);
    write_string(&mut out, json);
    out
}

/// Whether `peer` received, on `CH`, an awareness update holding `needle`.
fn saw(peer: &Peer, needle: &[u8]) -> bool {
    peer.docs[&CH]
        .awareness
        .iter()
        .any(|payload| payload.windows(needle.len()).any(|w| w == needle))
}

/// `peer` sets client `client`'s presence (clock 1) to a name; `watcher` waits until it has it.
async fn announce(peer: &mut Peer, client: u64, name: &str, watcher: &mut Peer) {
    let json = format!(r#"{{"name":"{name}"}}"#);
    let update = awareness(client, 1, &json);
    peer.client.send(CH, Message::Awareness(update)).await;
    watcher
        .pump_until(&format!("{name}'s presence"), |p| saw(p, name.as_bytes()))
        .await;
}

/// Presence travels between servers through Redis, and is never stored: a client's state
/// reaches the other server's clients, and so does its removal when the client leaves; when
/// its server dies, the other server drops the state once nobody renews it.
#[tokio::test]
async fn presence_travels_between_servers_and_leaves_with_its_client_or_server() {
    let backends = Backends::start("presence").await;
    let flags = backends.flags(&["--no-auth", "--remote-awareness-timeout-ms", "1500"]);
    let mut one = ServerProcess::start(&flags);
    let two = ServerProcess::start(&flags);
    until_on_redis(&[&one, &two]).await;
    let mut alice = Peer::connect(&one, None).await;
    let mut bob = Peer::connect(&two, None).await;
    alice.open_synced(CH, "presence/doc").await;
    bob.open_synced(CH, "presence/doc").await;

    announce(&mut alice, 77, "Alice", &mut bob).await;
    // Alice leaves: her server announces the removal (clock 2), to its own clients and Bob's.
    alice.client.close().await;
    bob.pump_until("Alice's removal", |p| {
        saw(p, &awareness(77, 2, "null")[1..])
    })
    .await;

    let mut carol = Peer::connect(&one, None).await;
    carol.open_synced(CH, "presence/doc").await;
    announce(&mut carol, 78, "Carol", &mut bob).await;
    // Carol's server dies: nobody removes her state, nobody renews it; Bob's server drops it.
    one.kill9();
    drop(carol);
    bob.pump_until("Carol's state dropped", |p| {
        saw(p, &awareness(78, 2, "null")[1..])
    })
    .await;
    // A newcomer on Bob's server is not told of either.
    let mut dave = Peer::connect(&two, None).await;
    dave.open_synced(CH, "presence/doc").await;
    assert!(!saw(&dave, b"Alice") && !saw(&dave, b"Carol"));
}
