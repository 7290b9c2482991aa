//! `quire-tests`: the harness for end-to-end scenarios. Every scenario runs the real
//! `quire-server` binary (on port 0, in a temporary data directory, over TLS with its `--dev`
//! certificate) and drives it with real WebSocket clients.
//!
//! # Layout
//! - [`server_process`]: start, kill -9, restart and stop the server binary; mint tokens.
//! - [`tls`]: a rustls client configuration trusting one server's dev certificate.
//! - [`http_probe`]: raw HTTP/1.1 requests (health, metrics, hand-made handshakes).
//! - [`raw_client`]: a protocol-level client that sends and receives mux frames exactly.
//! - [`doc_peer`]: a yrs replica bound to one channel of a raw client.
//! - [`edit_probe`]: a good client's edits at 20/s on a document, timed from send to arrival.
//! - [`insert_stream`]: a writer streaming marked inserts without waiting, recording ACKs.
//! - [`db_probe`]: the server's SQLite file seen from outside (integrity, stored blobs).
//! - [`cluster`]: what a cluster test's nodes share: PostgreSQL, Redis, a token secret.
//! - [`digests`]: `quire-server verify` run on nodes and their store, and replicas checked
//!   against it: every copy of every document holds the same state digest.
//! - [`postgres`]: a PostgreSQL server of the test's own (initdb, a loopback port, crash restarts).
//! - [`redis`]: a Redis server of the test's own (a loopback port, killed and restarted).
//! - [`nginx`]: nginx of the test's own with the docs' cluster configuration, in front of nodes.
//! - [`wait`]: polling with a deadline (tests never sleep to wait), and stopping a child
//!   process with SIGTERM within one.
//! - [`proxy`]: a TCP proxy that injects delay, stalls, resets, mid-frame cuts and throttling.
//! - [`netns`]: a network namespace of the test's own, with nftables packet loss and partitions.
//! - [`seeded_rng`]: a replayable random generator for randomized scenarios (`QUIRE_SEED`).
//! - [`rss`]: the server's resident memory from /proc, once or its peak over time.
//! - [`recorder`]: every value a watch channel publishes, for state-sequence checks.
//! - [`server_log`]: accept timestamps from the server's log and how they spread.
//! - [`client_util`]: quire-client configured for a test server, and waits on its states.
//! - [`desktop`]: the desktop app under Xvfb and tauri-driver, with pre-seeded settings.
//! - [`app_ui`]: the app's window through WebDriver (waits, typing, dialogs) and a peer by it.
//! - [`webdriver`]: a small W3C WebDriver client for driving the app.

pub mod app_ui;
pub mod client_util;
pub mod cluster;
pub mod db_probe;
pub mod desktop;
pub mod digests;
pub mod doc_peer;
pub mod edit_probe;
pub mod http_probe;
pub mod insert_stream;
pub mod netns;
pub mod nginx;
pub mod postgres;
pub mod proxy;
pub mod raw_client;
pub mod recorder;
pub mod redis;
pub mod rss;
pub mod seeded_rng;
pub mod server_log;
pub mod server_process;
pub mod tls;
pub mod wait;
pub mod webdriver;

/// The shared text every Quire editor binds to.
pub const CONTENT: &str = "content";
