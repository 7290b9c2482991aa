//! `quire-server`: Quire's self-hosted sync server.
//!
//! # Layout
//! - [`cli`]: the command line (`serve`, `token`, `export`, `import`, `compact`, `backup`, `list`).
//! - [`config`]: serve settings from flags, `QUIRE_*` variables and a TOML file.
//! - [`server`]: wires storage, rooms, persister and metrics; `run` serves until shutdown.
//! - [`http`]: accept loop, TLS, `/healthz`, `/metrics`, and the checked WebSocket upgrade.
//! - [`connection`]: one task pair per client: reader (frames → room tasks) and writer (a
//!   fair schedule of frames → socket), heartbeat, token expiry, close codes.
//! - [`rooms`] / [`room`]: documents in memory, shared by all their subscribers; fan-out.
//! - [`room_task`]: each room's own task, where all work on its document happens in order,
//!   the heavy parts on the document work pool; it also unloads the room when idle.
//! - [`work`]: the document work pool, a few low-priority threads for CPU-heavy yrs work.
//! - [`history`]: what a room's document was built from, to undo an update yrs applied in part.
//! - [`awareness`]: presence per room, cleared for subscribers that leave.
//! - [`persist`]: group commit to storage, durable acks after commit, compaction.
//! - [`store`]: the storage trait and its SQLite implementation.
//! - [`auth`]: HS256 tokens with per-document rights.
//! - [`failed_login`]: rate-limited `warn!` lines for refused logins.
//! - [`private`]: owner-only modes for the data directory and every file written in it.
//! - [`tls`]: certificates, including the `--dev` self-signed one.
//! - [`metrics`]: Prometheus figures.
//! - [`echo`]: a test-only echo endpoint for WebSocket conformance runs.
//! - [`shutdown`]: SIGTERM / SIGINT.

pub mod auth;
pub mod awareness;
pub mod cli;
pub mod config;
pub mod connection;
pub mod echo;
pub mod failed_login;
pub mod history;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod private;
pub mod room;
pub mod room_task;
pub mod rooms;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod work;
