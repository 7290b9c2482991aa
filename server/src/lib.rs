//! `quire-server`: Quire's self-hosted sync server.
//!
//! # Layout
//! Modules are layered: each uses only those below it in this list (a test,
//! `tests/module_layers.rs`, reads every file's `crate::` paths and fails on a cycle).
//! - [`cli`]: the command line (`serve`, `token`, `export`, `import`, `compact`, `backup`, `list`,
//!   `verify`).
//! - [`cli_history`]: `versions`, `version`, `restore`, `trash`, `untrash`, `purge`.
//! - [`cli_verify`]: `verify`, the servers' digests against the store's.
//! - [`serve`]: starts the persister, rooms and [`server::Server`], serves until shutdown,
//!   then drains.
//! - [`http`]: accept loop, TLS, `/healthz`, `/metrics`, the checked WebSocket upgrade, and
//!   the test-only echo endpoint for WebSocket conformance runs.
//! - [`connection`]: one reader per client: frames → room tasks, heartbeat, token expiry, close
//!   codes, the shutdown drain.
//! - [`trash`]: channel 0 requests on the trash, and the purge of expired documents.
//! - [`server`]: what every connection shares: configuration, rooms, persister, metrics,
//!   per-address counts, the shutdown switch.
//! - [`rooms`]: the registry of open documents, one [`room_task`] each.
//! - [`room_table`]: the registry's table, found by each room's own document ID.
//! - [`room_task`]: each room's own task, where all work on its document happens in order,
//!   the heavy parts on the document work pool; it runs while the room has work, and unloads
//!   the room when idle.
//! - [`room_versions`]: requests on a document's versions and its automatic versions, run by
//!   its room task.
//! - [`divergence`]: state digests of rooms and of the store, and the comparison of a quiet
//!   room with a shared store.
//! - [`persist`]: group commit to storage, durable acks after commit, compaction.
//! - [`room`]: one document in memory (a yrs Doc and awareness), shared by its subscribers;
//!   fan-out.
//! - [`subscribers`]: a room's subscribers, a short list.
//! - [`awareness`]: presence per room, bounded, cleared for subscribers that leave.
//! - [`history`]: what a room's document was built from, to undo an update yrs applied in part.
//! - [`outbox`]: the sending half of a connection: a fair schedule of frames and its writer.
//! - [`subscription`]: who a subscriber is (a channel on a connection).
//! - [`lane`]: a queue that allocates only while something waits (events, room jobs), with
//!   a worker started by the push that finds none (room jobs).
//! - [`turns`]: at most n at once, the rest waiting in order without a task (document loads).
//! - [`fanout`]: Redis pub/sub between servers sharing a database: stored updates out, other
//!   servers' updates in.
//! - [`store`]: the storage trait and its engines, SQLite (embedded) and PostgreSQL (shared):
//!   documents, versions, trash.
//! - [`work`]: the document work pool, a few low-priority threads for CPU-heavy yrs work.
//! - [`auth`]: HS256 tokens with per-document rights.
//! - [`failed_login`]: rate-limited `warn!` lines for refused logins.
//! - [`serve_lock`]: the data directory's lock, held by `serve`, checked by the command line.
//! - [`config`]: serve settings from flags, `QUIRE_*` variables and a TOML file.
//! - [`versions`]: when a document gets an automatic version, and how versions are thinned.
//! - [`restore`]: the forward edit of a restore: a text diff applied as a new update.
//! - [`tls`]: certificates, including the `--dev` self-signed one.
//! - [`private`]: owner-only modes for the data directory and every file written in it.
//! - [`forwarded`]: the client's address behind trusted proxies (`X-Forwarded-For`).
//! - [`memory`]: the server-wide memory budget: charges by use, closing the largest holders.
//! - [`allocator`]: glibc malloc settings for `serve`, so that freed memory leaves the process.
//! - [`metrics`]: Prometheus figures.
//! - [`shutdown`]: SIGTERM / SIGINT.

pub mod allocator;
pub mod auth;
pub mod awareness;
pub mod cli;
pub mod cli_history;
pub mod cli_verify;
pub mod config;
pub mod connection;
pub mod divergence;
pub mod failed_login;
pub mod fanout;
pub mod forwarded;
pub mod history;
pub mod http;
pub mod lane;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod persist;
pub mod private;
pub mod restore;
pub mod room;
pub mod room_table;
pub mod room_task;
pub mod room_versions;
pub mod rooms;
pub mod serve;
pub mod serve_lock;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod subscribers;
pub mod subscription;
pub mod tls;
pub mod trash;
pub mod turns;
pub mod versions;
pub mod work;
