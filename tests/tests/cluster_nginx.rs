//! Servers behind nginx (the docs' `nginx-cluster.conf`), sharing PostgreSQL and Redis, all
//! processes of the test's own on loopback. Real clients (`quire-client`) connect through
//! nginx, land on different nodes and edit one document together. A node killed, or paused
//! for longer than the heartbeat: its clients reconnect through nginx to the others and
//! resync, with their edits made meanwhile; every edit ends in every replica exactly once, and
//! every client, node and PostgreSQL hold the same state digest.

use std::time::Duration;

use quire_client::{Client, Comparison};
use quire_tests::client_util::{append, occurrences, until_saved, until_text};
use quire_tests::cluster::{client, open_connected, Backends};
use quire_tests::nginx::Nginx;
use quire_tests::server_process::ServerProcess;

const DEADLINE: Duration = Duration::from_secs(30);
const DOC: &str = "cluster/shared";

/// `count` nodes (plain ws://, as behind a proxy) with `extra` flags, nginx in front, and one
/// client per node through nginx with `DOC` open.
async fn cluster(
    backends: &Backends,
    count: usize,
    extra: &[&str],
) -> (
    Vec<ServerProcess>,
    Nginx,
    Vec<Client>,
    Vec<quire_client::DocHandle>,
) {
    // Every connection comes from nginx, which names the client in X-Forwarded-For.
    let mut flags = vec!["--shared-poll-ms", "100", "--trusted-proxy", "127.0.0.1"];
    flags.extend_from_slice(extra);
    let flags = backends.flags(&flags);
    let nodes: Vec<ServerProcess> = (0..count)
        .map(|_| ServerProcess::start_plain_ws(&flags))
        .collect();
    let nginx = Nginx::start_cluster(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>());
    let token = backends.token();
    let through_nginx = format!("ws://{}/ws", nginx.addr);
    let clients: Vec<Client> = (0..count).map(|_| client(&through_nginx, &token)).collect();
    let mut docs = Vec::new();
    for client in &clients {
        docs.push(open_connected(client, DOC, DEADLINE).await);
    }
    // Round robin: one client per node.
    for node in &nodes {
        assert_eq!(
            node.metric("quire_connections").await,
            1.0,
            "{}",
            nginx.log()
        );
    }
    (nodes, nginx, clients, docs)
}

/// Each client adds `<round-i>`; waits until every client has every one of them saved and in
/// its replica.
async fn edit_round(
    clients: &[Client],
    docs: &[quire_client::DocHandle],
    round: &str,
    deadline: Duration,
) {
    for (i, doc) in docs.iter().enumerate() {
        append(doc, &format!("<{round}-{i}>"));
    }
    for (client, doc) in clients.iter().zip(docs) {
        until_saved(client, doc, deadline).await;
    }
    for doc in docs {
        until_text(
            doc,
            &format!("every client's {round} edit"),
            deadline,
            |text| (0..docs.len()).all(|i| text.contains(&format!("<{round}-{i}>"))),
        )
        .await;
    }
}

/// Every replica holds the same text, with each round's edits exactly once.
fn assert_converged(docs: &[quire_client::DocHandle], rounds: &[&str]) -> String {
    let text = docs[0].text();
    for doc in docs {
        assert_eq!(doc.text(), text);
    }
    for round in rounds {
        for i in 0..docs.len() {
            assert_eq!(occurrences(&text, &format!("<{round}-{i}>")), 1, "{text}");
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_nginx_share_a_document_across_nodes_and_survive_a_node() {
    let backends = Backends::start("nginx").await;
    let (mut nodes, _nginx, clients, docs) = cluster(&backends, 3, &[]).await;
    edit_round(&clients, &docs, "first", DEADLINE).await;

    // Node 0 dies. Its client edits on while cut off, reconnects through nginx to one of the
    // others and resyncs; the others edit on too.
    nodes[0].kill9();
    edit_round(&clients, &docs, "second", DEADLINE).await;
    let mut live = 0.0;
    for node in &nodes[1..] {
        live += node.metric("quire_connections").await;
    }
    assert_eq!(live, 3.0, "every client on the two live nodes");
    let text = assert_converged(&docs, &["first", "second"]);
    assert_eq!(
        backends.stored_text(DOC),
        text,
        "PostgreSQL holds what the clients hold"
    );
    let live: Vec<&ServerProcess> = nodes[1..].iter().collect();
    assert_same_state(&backends, &live, &docs).await;
}

/// Every client, every live node and PostgreSQL hold the same state digest, and each client
/// finds its replica equal to its node's copy.
async fn assert_same_state(
    backends: &Backends,
    nodes: &[&ServerProcess],
    docs: &[quire_client::DocHandle],
) {
    let replicas = || docs.iter().map(|d| (DOC.to_owned(), d.digest())).collect();
    backends
        .until_converged(nodes, &[DOC], DEADLINE, replicas)
        .await;
    for doc in docs {
        let answer = doc.compare_with_server().await.expect("asking the digest");
        // Nothing edits the replicas now.
        assert!(matches!(answer, Comparison::Same(_)), "{answer:?}");
    }
}

/// A client whose node dies resyncs with another node by state vector: what crosses the wire
/// is the difference, not the document. The document is 1 MB; the surviving node's traffic
/// for the reconnect, the resync and a round of small edits from both clients stays far below
/// that in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_another_node_resyncs_the_difference_not_the_document() {
    const DOC_BYTES: usize = 1 << 20;
    let backends = Backends::start("resync").await;
    let (mut nodes, _nginx, clients, docs) = cluster(&backends, 2, &[]).await;
    let big: String = "0123456789abcdef".repeat(DOC_BYTES / 16);
    append(&docs[0], &big);
    for (client, doc) in clients.iter().zip(&docs) {
        until_saved(client, doc, DEADLINE).await;
        until_text(doc, "the large document everywhere", DEADLINE, |t| {
            t.len() >= DOC_BYTES
        })
        .await;
    }
    edit_round(&clients, &docs, "before", DEADLINE).await;

    let survivor = &nodes[1];
    let (bytes_in, bytes_out) = (
        survivor.metric("quire_bytes_in_total").await,
        survivor.metric("quire_bytes_out_total").await,
    );
    nodes[0].kill9();
    edit_round(&clients, &docs, "after", DEADLINE).await;
    assert_eq!(
        nodes[1].metric("quire_connections").await,
        2.0,
        "both clients on the surviving node"
    );
    let read = nodes[1].metric("quire_bytes_in_total").await - bytes_in;
    let written = nodes[1].metric("quire_bytes_out_total").await - bytes_out;
    eprintln!(
        "resync of a {DOC_BYTES}-byte document on another node: {read} bytes in, {written} out"
    );
    let limit = (DOC_BYTES / 16) as f64;
    assert!(read < limit, "{read} bytes read by the surviving node");
    assert!(
        written < limit,
        "{written} bytes written by the surviving node"
    );
    assert_converged(&docs, &["before", "after"]);
}

/// A node paused (SIGSTOP) for longer than the heartbeat: its client's heartbeat times out and
/// it reconnects through nginx to the other node, sending again what the paused node never
/// acknowledged. Resumed (SIGCONT), the node catches up from the database and serves the same
/// text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_loses_its_clients_to_the_others_and_catches_up_when_resumed() {
    let backends = Backends::start("paused").await;
    let heartbeat = [
        "--heartbeat-interval-ms",
        "300",
        "--heartbeat-timeout-ms",
        "1500",
    ];
    let (nodes, _nginx, clients, docs) = cluster(&backends, 2, &heartbeat).await;
    edit_round(&clients, &docs, "before", DEADLINE).await;

    nodes[0].pause();
    // A reconnect may first reach the paused node through nginx and wait out the client's
    // connect timeout (15 s) before its next attempt reaches the live one.
    edit_round(&clients, &docs, "paused", Duration::from_secs(60)).await;
    nodes[0].resume();
    let text = assert_converged(&docs, &["before", "paused"]);
    let direct = client(&format!("ws://{}/ws", nodes[0].addr), &backends.token());
    let fresh = open_connected(&direct, DOC, DEADLINE).await;
    until_text(
        &fresh,
        "the resumed node serving what the others hold",
        DEADLINE,
        |t| t == text,
    )
    .await;
    let mut all = docs.clone();
    all.push(fresh);
    assert_same_state(&backends, &[&nodes[0], &nodes[1]], &all).await;
}
