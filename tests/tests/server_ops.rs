//! Operations: `/healthz`, `/metrics` figures that move with the traffic, and the maintenance
//! subcommands (`export`, `import`, `compact`, `backup`, `list`) run beside a live server.

use quire_protocol::ChannelId;
use quire_tests::db_probe;
use quire_tests::doc_peer::Peer;
use quire_tests::http_probe::{self, metric};
use quire_tests::server_process::{command_in, stdout_of, ServerProcess};
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);

#[tokio::test]
async fn healthz_and_metrics_follow_the_traffic() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let health = http_probe::get(server.addr, server.tls(), "/healthz").await;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));

    let before = server.metrics().await;
    let at = |text: &str, name: &str| metric(text, name).unwrap_or(0.0);
    assert_eq!(at(&before, "quire_connections"), 0.0);
    assert_eq!(at(&before, "quire_channels"), 0.0);
    assert_eq!(at(&before, "quire_durable_ack_seconds_count"), 0.0);

    let mut alice = Peer::connect(&server, Some(&token)).await;
    let mut bob = Peer::connect(&server, Some(&token)).await;
    alice.open_synced(CH, "metrics/doc").await;
    bob.open_synced(CH, "metrics/doc").await;
    for n in 0..5 {
        alice.append(CH, &format!("[{n}]")).await;
    }
    alice
        .pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    bob.pump_until("Alice's edits", |p| p.text(CH).ends_with("[4]"))
        .await;

    let during = server.metrics().await;
    assert_eq!(at(&during, "quire_connections"), 2.0);
    assert_eq!(at(&during, "quire_channels"), 2.0);
    assert_eq!(at(&during, "quire_documents_loaded"), 1.0);
    assert!(at(&during, "quire_connections_total") >= 2.0);
    assert!(at(&during, "quire_frames_in_total") >= at(&before, "quire_frames_in_total") + 5.0);
    assert!(at(&during, "quire_frames_out_total") >= at(&before, "quire_frames_out_total") + 5.0);
    assert!(at(&during, "quire_bytes_in_total") > at(&before, "quire_bytes_in_total"));
    assert_eq!(at(&during, "quire_updates_applied_total"), 5.0);
    assert_eq!(at(&during, "quire_updates_persisted_total"), 5.0);
    assert!(at(&during, "quire_commits_total") >= 1.0);
    // Every write is timed, the step 2s that changed nothing included.
    assert!(at(&during, "quire_durable_ack_seconds_count") >= 5.0);
    assert_eq!(
        at(&during, "quire_durable_ack_seconds_count"),
        at(&during, "quire_durable_ack_seconds_bucket{le=\"+Inf\"}")
    );

    // Closes are counted by code: a normal close, and a text frame (1003).
    alice.client.close().await;
    bob.client
        .send_raw(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await;
    assert_eq!(bob.client.expect_close().await, 1003);
    wait::until("both closes counted", wait::DEADLINE, || async {
        let text = server.metrics().await;
        let done = at(&text, "quire_connections") == 0.0
            && at(&text, "quire_closes_total{code=\"1000\"}") == 1.0
            && at(&text, "quire_closes_total{code=\"1003\"}") == 1.0;
        done.then_some(text)
    })
    .await;
    assert_eq!(server.metric("quire_channels").await, 0.0);
}

#[tokio::test]
async fn metrics_listen_serves_metrics_apart_and_the_main_listener_stops() {
    let server = ServerProcess::start(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics_addr = server
        .metrics_addr
        .expect("the server printed its metrics address");
    assert_ne!(metrics_addr, server.addr);

    let metrics = http_probe::get_plain(metrics_addr, "/metrics").await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metric(&metrics.body, "quire_connections").is_some(),
        "{metrics:?}"
    );
    let health = http_probe::get_plain(metrics_addr, "/healthz").await;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    let other = http_probe::get_plain(metrics_addr, "/ws").await;
    assert_eq!(other.status, 404, "nothing but metrics and health there");

    // On the main listener /metrics is gone; /healthz and the WebSocket stay.
    let main = http_probe::get(server.addr, server.tls(), "/metrics").await;
    assert_eq!(main.status, 404, "{main:?}");
    let health = http_probe::get(server.addr, server.tls(), "/healthz").await;
    assert_eq!(health.status, 200);
    let token = server.token(&["*"], true, "1h");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "metrics/apart").await;
    let text = http_probe::get_plain(metrics_addr, "/metrics").await.body;
    assert_eq!(metric(&text, "quire_channels"), Some(1.0), "{text}");
}

#[tokio::test]
async fn metrics_listen_comes_from_the_environment_too() {
    let server = ServerProcess::start_with_env(&[], &[("QUIRE_METRICS_LISTEN", "127.0.0.1:0")]);
    let metrics_addr = server
        .metrics_addr
        .expect("QUIRE_METRICS_LISTEN is honoured");
    let metrics = http_probe::get_plain(metrics_addr, "/metrics").await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
}

#[tokio::test]
async fn export_import_compact_and_list_work_on_a_live_server() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "ops/notes").await;
    for n in 0..20 {
        peer.append(CH, &format!("line {n}\n")).await;
    }
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    let text = peer.text(CH);

    assert_eq!(stdout_of(server.command(&["export", "ops/notes"])), text);
    let json: serde_json::Value = serde_json::from_str(&stdout_of(server.command(&[
        "export",
        "ops/notes",
        "--format",
        "json",
    ])))
    .expect("export --format json prints JSON");
    assert_eq!(json["id"], "ops/notes");
    assert_eq!(json["content"], text.as_str());
    assert!(json["state_vector"]
        .as_object()
        .is_some_and(|sv| sv.len() == 1));
    assert!(!server.command(&["export", "ops/missing"]).status.success());

    // compact: the log of 20 updates becomes one snapshot; the content is unchanged.
    let db = server.db_path();
    assert_eq!(db_probe::stored_blobs(&db, "ops/notes").await.len(), 20);
    let compacted = stdout_of(server.command(&["compact", "ops/notes"]));
    assert!(compacted.contains("compacted 1"), "{compacted}");
    assert_eq!(db_probe::stored_blobs(&db, "ops/notes").await.len(), 1);
    assert_eq!(stdout_of(server.command(&["export", "ops/notes"])), text);
    // The server keeps appending after the snapshot, and a reader gets both.
    peer.append(CH, "after compaction\n").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    let mut fresh = Peer::connect(&server, Some(&token)).await;
    fresh.open_synced(CH, "ops/notes").await;
    assert_eq!(fresh.text(CH), format!("{text}after compaction\n"));

    // import creates a new document from a text file, and refuses to overwrite one.
    let file = server.data_dir().join("readme.txt");
    std::fs::write(&file, "imported text\nwith two lines\n").unwrap();
    let file = file.to_str().unwrap();
    stdout_of(server.command(&["import", "ops/readme", file]));
    assert!(!server
        .command(&["import", "ops/notes", file])
        .status
        .success());
    let mut reader = Peer::connect(&server, Some(&token)).await;
    reader.open_synced(CH, "ops/readme").await;
    assert_eq!(reader.text(CH), "imported text\nwith two lines\n");

    let listed = stdout_of(server.command(&["list"]));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["ops/notes", "ops/readme"]
    );
    assert_eq!(
        stdout_of(server.command(&["compact"])),
        "compacted 2 document(s)\n"
    );
}

#[tokio::test]
async fn a_backup_taken_while_serving_holds_the_documents() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "backup/doc").await;
    peer.append(CH, "saved before the backup").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quire.db");
    stdout_of(server.command(&["backup", file.to_str().unwrap()]));
    // Writes carry on while and after the backup runs; the backup is a consistent copy.
    peer.append(CH, ", and after").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    assert!(
        !server
            .command(&["backup", file.to_str().unwrap()])
            .status
            .success(),
        "backup overwrote an existing file"
    );

    assert_eq!(db_probe::integrity_check(&file).await, "ok");
    let from_backup = stdout_of(command_in(dir.path(), &["export", "backup/doc"]));
    assert_eq!(from_backup, "saved before the backup");
    assert_eq!(stdout_of(command_in(dir.path(), &["list"])), "backup/doc\n");
}
