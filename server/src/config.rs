//! Serve configuration: every setting comes from a flag, else a `QUIRE_*` environment variable,
//! else the optional TOML file (`--config`, same names with `_` for `-`), else its default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use quire_protocol::{HeartbeatConfig, Limits};
use serde::Deserialize;

use crate::forwarded::ProxyNet;
use crate::memory::MemoryBudget;
use crate::versions::HistoryPolicy;

/// A fragmented message must be finished within this many seconds: 2 MiB/s for the largest
/// message the default limits allow, a few KiB/s for a document of ordinary size.
pub const DEFAULT_FRAGMENT_TIMEOUT_SECS: u64 = 120;

/// The persister's default commit window (`--commit-window-us`). At 1,000 writes/s spread
/// over 200 connections it cuts commits from ~1 to ~0.15 per write and the server's CPU per
/// update by half (docs/BENCHMARKS.md), for ~5 ms more until a write is durable: far below
/// what a user notices in a "saved" indicator.
pub const DEFAULT_COMMIT_WINDOW_US: u64 = 5000;

/// The commit window's default on PostgreSQL. Other nodes hear of an update only after its
/// commit, so the window is part of every cross-node delivery: at S1's load on three nodes,
/// 5 ms gave a cross-node p99 of 11.3 ms and 2 ms gave 7.6 ms, for 40 % more node CPU per
/// update (docs/BENCHMARKS.md, cluster).
pub const DEFAULT_SHARED_COMMIT_WINDOW_US: u64 = 2000;

/// How often a server on a shared database checks for other servers' updates by default
/// (`--shared-poll-ms`): one query per check for all its loaded documents.
pub const DEFAULT_SHARED_POLL_MS: u64 = 250;
/// Seconds between digest comparisons of one quiet document with the shared database: each
/// reads and rebuilds the whole document.
pub const DEFAULT_DIGEST_CHECK_SECS: u64 = 60;

/// How clients reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TLS with a self-signed certificate kept in the data directory.
    Dev,
    /// TLS with the operator's certificate chain and key (PEM).
    Tls { cert: PathBuf, key: PathBuf },
    /// Plain ws://, only behind a TLS-terminating proxy.
    Plain,
}

/// Flags of `quire-server serve`. Every field is optional so that the TOML file and the
/// defaults can fill what the command line leaves out.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0 picks a free port and prints it).
    #[arg(long, env = "QUIRE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` and `/healthz` on this separate plain-HTTP address (e.g. a private
    /// interface for Prometheus); `/metrics` on the main listener then answers 404.
    #[arg(long, env = "QUIRE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory for the database, the token secret and the dev certificate.
    #[arg(long, env = "QUIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep documents in PostgreSQL at this URL (postgres://user:password@host:port/db)
    /// instead of SQLite in the data directory; several servers may share one database.
    #[arg(long, env = "QUIRE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// With --database-url: milliseconds between checks for updates other servers stored in
    /// the database, which are then relayed to this server's clients.
    #[arg(long, env = "QUIRE_SHARED_POLL_MS")]
    pub shared_poll_ms: Option<u64>,
    /// With --database-url: a loaded document that has gone quiet is compared with the
    /// database by state digest at most once per this many seconds (0: never); a mismatch is
    /// logged, counted in quire_digest_mismatches_total and repaired where it can be.
    #[arg(long, env = "QUIRE_DIGEST_CHECK_SECS")]
    pub digest_check_secs: Option<u64>,
    /// With --database-url: a Redis server (redis://host:port) through which the servers
    /// sharing the database pass each other's updates at once; without it, or while it is
    /// unreachable, they find them by checking the database every --shared-poll-ms.
    #[arg(long, env = "QUIRE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Test only: milliseconds after which presence relayed from another server and not
    /// renewed is dropped (30,000: PROTOCOL §6.6's clients renew every 15 s).
    #[arg(long, env = "QUIRE_REMOTE_AWARENESS_TIMEOUT_MS", hide = true)]
    pub remote_awareness_timeout_ms: Option<u64>,
    /// Development mode: TLS with a self-signed certificate for localhost, made once and kept
    /// in the data directory; its path and SHA-256 fingerprint are printed at start.
    #[arg(long, env = "QUIRE_DEV", num_args = 0..=1, default_missing_value = "true")]
    pub dev: Option<bool>,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, env = "QUIRE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "QUIRE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain ws:// without TLS. Only for running behind a TLS-terminating proxy.
    #[arg(long, env = "QUIRE_INSECURE_PLAIN_WS", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_plain_ws: Option<bool>,
    /// Accept connections without a token, as one local user with every right. Never use this
    /// on a server others can reach.
    #[arg(long, env = "QUIRE_NO_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub no_auth: Option<bool>,
    /// Token signing secret (base64url). Default: the data directory's secret.key, created on
    /// first start.
    #[arg(long, env = "QUIRE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Milliseconds between the server's pings.
    #[arg(long, env = "QUIRE_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u32>,
    /// Milliseconds of silence after which a client is dropped (close 4008).
    #[arg(long, env = "QUIRE_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u32>,
    /// Largest WebSocket message (one mux frame), bytes; larger closes the connection with 1009.
    #[arg(long, env = "QUIRE_MAX_FRAME_SIZE")]
    pub max_frame_size: Option<u32>,
    /// Largest reassembled message (a document's full state), bytes.
    #[arg(long, env = "QUIRE_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<u32>,
    /// Most document channels open at once on one connection.
    #[arg(long, env = "QUIRE_MAX_CHANNELS")]
    pub max_channels: Option<u32>,
    /// Longest document ID, bytes.
    #[arg(long, env = "QUIRE_MAX_DOC_ID_LEN")]
    pub max_doc_id_len: Option<u32>,
    /// Most simultaneous connections from one IP address (429 beyond).
    #[arg(long, env = "QUIRE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,
    /// Most simultaneous TCP connections from one IP address, counted from accept, before
    /// any TLS or HTTP, until they end (WebSockets included); beyond, a new connection is
    /// closed at once. Default: twice --max-connections-per-ip.
    #[arg(long, env = "QUIRE_MAX_TCP_CONNECTIONS_PER_IP")]
    pub max_tcp_connections_per_ip: Option<u32>,
    /// A proxy whose `X-Forwarded-For` names the client (an address, or a network like
    /// 10.0.0.0/8); repeatable, or comma-separated. Its connections count against the client's
    /// address, and against no per-address limit of its own.
    #[arg(
        long = "trusted-proxy",
        env = "QUIRE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxy: Option<Vec<String>>,
    /// Outbound queue depth per connection, in messages; a client that lets it fill is closed
    /// with 4009 (slow consumer).
    #[arg(long, env = "QUIRE_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Outbound bytes queued per connection before it counts as a slow consumer.
    #[arg(long, env = "QUIRE_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Milliseconds a document stays in memory after its last subscriber leaves.
    #[arg(long, env = "QUIRE_IDLE_UNLOAD_MS")]
    pub idle_unload_ms: Option<u64>,
    /// Compact a document's update log into a snapshot after this many updates.
    #[arg(long, env = "QUIRE_COMPACT_AFTER_UPDATES")]
    pub compact_after_updates: Option<u64>,
    /// Microseconds the persister waits after a write arrives for more to commit with it (one
    /// fsync for all): a longer window means fewer commits and more ack latency; 0 commits
    /// whatever is waiting at once. Default 5000, or 2000 with --database-url (other servers
    /// hear of an update only after its commit).
    #[arg(long, env = "QUIRE_COMMIT_WINDOW_US")]
    pub commit_window_us: Option<u64>,
    /// Seconds allowed for a graceful shutdown before the process exits anyway.
    #[arg(long, env = "QUIRE_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Seconds a client has to finish a fragmented message from its first piece; past it the
    /// connection is closed with 1008 (PROTOCOL §7).
    #[arg(long, env = "QUIRE_FRAGMENT_TIMEOUT_SECS")]
    pub fragment_timeout_secs: Option<u64>,
    /// The server-wide memory budget: queued output, unfinished messages, awareness and
    /// loaded documents together, e.g. `512MiB`, `2GiB` or a number of bytes. Default: half
    /// of the machine's memory (or of the cgroup's limit). Past it, the connections holding
    /// the most are closed and new work is refused (docs/SECURITY.md).
    #[arg(long, env = "QUIRE_MEMORY_BUDGET")]
    pub memory_budget: Option<String>,
    /// Seconds of editing between two automatic versions of a document (0: none).
    #[arg(long, env = "QUIRE_VERSION_INTERVAL_SECS")]
    pub version_interval_secs: Option<u64>,
    /// Versions kept per document; past it, old automatic versions are thinned.
    #[arg(long, env = "QUIRE_VERSION_MAX_COUNT")]
    pub version_max_count: Option<u32>,
    /// Bytes of versions kept per document, e.g. `64MiB`; past it, old automatic versions are
    /// thinned.
    #[arg(long, env = "QUIRE_VERSION_MAX_BYTES")]
    pub version_max_bytes: Option<String>,
    /// Days a trashed document can be brought back before it is deleted for good.
    #[arg(long, env = "QUIRE_TRASH_RETENTION_DAYS")]
    pub trash_retention_days: Option<u32>,
    /// Test only: serve a WebSocket echo endpoint on /echo (for the conformance suite).
    #[arg(long, env = "QUIRE_ECHO_ENDPOINT", hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub echo_endpoint: Option<bool>,
}

/// The resolved configuration of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Where `/metrics` is served instead of the main listener, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// PostgreSQL, if documents are kept there rather than in the data directory's SQLite.
    pub database_url: Option<DatabaseUrl>,
    /// How often a server on a shared database checks for updates other servers stored.
    pub shared_poll: Duration,
    /// How often at most a quiet document is compared with the shared database; `None`: never.
    pub digest_check: Option<Duration>,
    /// Redis, for passing updates between the servers sharing the database.
    pub redis_url: Option<String>,
    /// Presence relayed from another server and not renewed this long is dropped.
    pub remote_awareness_timeout: Duration,
    pub transport: Transport,
    pub no_auth: bool,
    pub secret: Option<String>,
    pub heartbeat: HeartbeatConfig,
    pub limits: Limits,
    pub max_connections_per_ip: u32,
    /// Accepted TCP connections per address, counted before the upgrade as well as after.
    pub max_tcp_connections_per_ip: u32,
    /// Proxies whose `X-Forwarded-For` is believed ([`crate::forwarded`]).
    pub trusted_proxies: Vec<ProxyNet>,
    pub queue_depth: usize,
    pub max_queued_bytes: usize,
    pub idle_unload: Duration,
    pub compact_after_updates: u64,
    pub commit_window: Duration,
    pub shutdown_timeout: Duration,
    /// Time allowed to finish a fragmented message (PROTOCOL §7).
    pub fragment_timeout: Duration,
    /// Bytes of the server-wide memory budget.
    pub memory_budget: u64,
    /// Automatic versions, their quota, and how long the trash keeps documents.
    pub history: HistoryPolicy,
    pub echo_endpoint: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A `postgres://` (or `postgresql://`) URL, as libpq takes it. Shown without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid(
                "--database-url must start with postgres:// (leave it out to keep documents \
                 in SQLite in the data directory)"
                    .into(),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The URL with its password, if any, replaced by `***`: for logs and the start-up banner.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((user_info, host)) => {
                let user = user_info
                    .split_once(':')
                    .map_or(user_info, |(user, _)| user);
                let hidden = if user_info.contains(':') { ":***" } else { "" };
                write!(f, "{scheme}://{user}{hidden}@{host}{path}")
            }
            None => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Default data directory: `$XDG_DATA_HOME/quire` or `~/.local/share/quire`, else `./quire-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("quire");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/quire");
    }
    PathBuf::from("quire-data")
}

impl ServeArgs {
    /// Fills unset fields from `file`.
    pub fn with_file(self, file: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = file else { return Ok(self) };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let from_file: ServeArgs = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        macro_rules! merge {
            ($($field:ident),*) => { ServeArgs { $($field: self.$field.or(from_file.$field),)* } };
        }
        Ok(merge!(
            listen,
            metrics_listen,
            data_dir,
            database_url,
            shared_poll_ms,
            digest_check_secs,
            redis_url,
            remote_awareness_timeout_ms,
            dev,
            tls_cert,
            tls_key,
            insecure_plain_ws,
            no_auth,
            secret,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            max_frame_size,
            max_message_size,
            max_channels,
            max_doc_id_len,
            max_connections_per_ip,
            max_tcp_connections_per_ip,
            trusted_proxy,
            queue_depth,
            max_queued_bytes,
            idle_unload_ms,
            compact_after_updates,
            commit_window_us,
            shutdown_timeout_secs,
            fragment_timeout_secs,
            memory_budget,
            version_interval_secs,
            version_max_count,
            version_max_bytes,
            trash_retention_days,
            echo_endpoint
        ))
    }

    /// Applies defaults and checks the combination.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let transport = match (self.dev.unwrap_or(false), self.tls_cert, self.tls_key, self.insecure_plain_ws.unwrap_or(false)) {
            (true, None, None, false) => Transport::Dev,
            (false, Some(cert), Some(key), false) => Transport::Tls { cert, key },
            (false, None, None, true) => Transport::Plain,
            (false, None, None, false) => {
                return Err(ConfigError::Invalid(
                    "choose a transport: --dev (self-signed TLS), --tls-cert/--tls-key, or --insecure-plain-ws behind a TLS proxy".into(),
                ))
            }
            _ => return Err(ConfigError::Invalid("--dev, --tls-cert/--tls-key and --insecure-plain-ws exclude each other".into())),
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_frame_size: self.max_frame_size.unwrap_or(defaults.max_frame_size),
            max_message_size: self.max_message_size.unwrap_or(defaults.max_message_size),
            max_channels: self.max_channels.unwrap_or(defaults.max_channels),
            max_doc_id_len: self.max_doc_id_len.unwrap_or(defaults.max_doc_id_len),
        };
        if limits.max_frame_size < Limits::MIN_FRAME_SIZE
            || limits.max_message_size < limits.max_frame_size
        {
            return Err(ConfigError::Invalid(format!(
                "--max-frame-size must be at least {} and at most --max-message-size",
                Limits::MIN_FRAME_SIZE
            )));
        }
        let heartbeat = HeartbeatConfig {
            interval: self
                .heartbeat_interval_ms
                .map_or(HeartbeatConfig::PING_INTERVAL, |ms| {
                    Duration::from_millis(ms.into())
                }),
            timeout: self
                .heartbeat_timeout_ms
                .map_or(HeartbeatConfig::HEARTBEAT_TIMEOUT, |ms| {
                    Duration::from_millis(ms.into())
                }),
        };
        let max_connections_per_ip = self.max_connections_per_ip.unwrap_or(256);
        let max_tcp_connections_per_ip = self
            .max_tcp_connections_per_ip
            .unwrap_or(max_connections_per_ip.saturating_mul(2));
        if max_tcp_connections_per_ip < max_connections_per_ip {
            return Err(ConfigError::Invalid(
                "--max-tcp-connections-per-ip must be at least --max-connections-per-ip".into(),
            ));
        }
        let trusted_proxies = self
            .trusted_proxy
            .unwrap_or_default()
            .iter()
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                text.parse::<ProxyNet>()
                    .map_err(|err| ConfigError::Invalid(format!("--trusted-proxy: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if heartbeat.timeout <= heartbeat.interval {
            return Err(ConfigError::Invalid(
                "--heartbeat-timeout-ms must exceed --heartbeat-interval-ms".into(),
            ));
        }
        let memory_budget = match &self.memory_budget {
            Some(text) => parse_size(text).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--memory-budget {text:?}: give bytes, or a number with KiB, MiB or GiB"
                ))
            })?,
            None => MemoryBudget::default_limit(),
        };
        if memory_budget < MIN_MEMORY_BUDGET {
            return Err(ConfigError::Invalid(
                "--memory-budget must be at least 1MiB".into(),
            ));
        }
        let database_url = self
            .database_url
            .as_deref()
            .map(DatabaseUrl::parse)
            .transpose()?;
        let default_window_us = if database_url.is_some() {
            DEFAULT_SHARED_COMMIT_WINDOW_US
        } else {
            DEFAULT_COMMIT_WINDOW_US
        };
        if self.redis_url.is_some() && database_url.is_none() {
            return Err(ConfigError::Invalid(
                "--redis-url needs --database-url: Redis passes updates between servers that \
                 share a PostgreSQL database"
                    .into(),
            ));
        }
        let history = resolve_history(
            self.version_interval_secs,
            self.version_max_count,
            self.version_max_bytes.as_deref(),
            self.trash_retention_days,
        )?;
        Ok(ServeConfig {
            listen: self
                .listen
                .unwrap_or_else(|| "127.0.0.1:7700".parse().expect("valid address")),
            metrics_listen: self.metrics_listen,
            data_dir: self.data_dir.unwrap_or_else(default_data_dir),
            database_url,
            shared_poll: Duration::from_millis(
                self.shared_poll_ms.unwrap_or(DEFAULT_SHARED_POLL_MS).max(1),
            ),
            digest_check: match self.digest_check_secs.unwrap_or(DEFAULT_DIGEST_CHECK_SECS) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            redis_url: self.redis_url,
            remote_awareness_timeout: Duration::from_millis(
                self.remote_awareness_timeout_ms.unwrap_or(30_000),
            ),
            transport,
            no_auth: self.no_auth.unwrap_or(false),
            secret: self.secret,
            heartbeat,
            limits,
            max_connections_per_ip,
            max_tcp_connections_per_ip,
            trusted_proxies,
            queue_depth: self.queue_depth.unwrap_or(4096),
            max_queued_bytes: self
                .max_queued_bytes
                .unwrap_or_else(|| default_max_queued_bytes(memory_budget)),
            idle_unload: Duration::from_millis(self.idle_unload_ms.unwrap_or(30_000)),
            compact_after_updates: self.compact_after_updates.unwrap_or(1000),
            commit_window: Duration::from_micros(
                self.commit_window_us.unwrap_or(default_window_us),
            ),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs.unwrap_or(10)),
            fragment_timeout: Duration::from_secs(
                self.fragment_timeout_secs
                    .unwrap_or(DEFAULT_FRAGMENT_TIMEOUT_SECS),
            ),
            memory_budget,
            history,
            echo_endpoint: self.echo_endpoint.unwrap_or(false),
        })
    }
}

/// The history settings, with their defaults: a version per 10 minutes of editing, at most
/// 100 versions and 64 MiB of them per document, 30 days in the trash.
pub(crate) fn resolve_history(
    interval_secs: Option<u64>,
    max_count: Option<u32>,
    max_bytes: Option<&str>,
    retention_days: Option<u32>,
) -> Result<HistoryPolicy, ConfigError> {
    let defaults = HistoryPolicy::default();
    let max_bytes = match max_bytes {
        Some(text) => parse_size(text).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--version-max-bytes {text:?}: give bytes, or a number with KiB, MiB or GiB"
            ))
        })?,
        None => defaults.max_bytes,
    };
    let max_count = max_count.unwrap_or(defaults.max_count);
    if max_count < 2 {
        return Err(ConfigError::Invalid(
            "--version-max-count must be at least 2".into(),
        ));
    }
    Ok(HistoryPolicy {
        auto_interval: interval_secs.map_or(defaults.auto_interval, Duration::from_secs),
        max_count,
        max_bytes,
        trash_retention: retention_days.map_or(defaults.trash_retention, |days| {
            Duration::from_secs(u64::from(days) * 86_400)
        }),
    })
}

/// The smallest memory budget accepted.
const MIN_MEMORY_BUDGET: u64 = 1024 * 1024;

/// One connection may queue 64 MiB for sending, or an eighth of the memory budget if that is
/// less (at least 1 MiB): with a small budget, a few slow readers must not take it all.
fn default_max_queued_bytes(memory_budget: u64) -> usize {
    const MIB: u64 = 1024 * 1024;
    (memory_budget / 8).clamp(MIB, 64 * MIB) as usize
}

/// A size: bytes, or a number with a binary unit (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("quire.toml");
        std::fs::write(
            &file,
            "dev = true\nmax_channels = 7\nqueue_depth = 10\nmetrics_listen = \"127.0.0.1:9100\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            queue_depth: Some(99),
            ..ServeArgs::default()
        };
        let config = args.with_file(Some(&file)).unwrap().resolve().unwrap();
        assert_eq!(config.transport, Transport::Dev);
        assert_eq!(config.limits.max_channels, 7);
        assert_eq!(config.queue_depth, 99);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(config.limits.max_frame_size, Limits::DEFAULT_MAX_FRAME_SIZE);
    }

    #[test]
    fn a_transport_must_be_chosen_once() {
        assert!(ServeArgs::default().resolve().is_err());
        let both = ServeArgs {
            dev: Some(true),
            insecure_plain_ws: Some(true),
            ..ServeArgs::default()
        };
        assert!(both.resolve().is_err());
    }

    #[test]
    fn the_tcp_limit_per_address_defaults_to_twice_the_websocket_limit() {
        let dev = || ServeArgs {
            dev: Some(true),
            ..ServeArgs::default()
        };
        let config = dev().resolve().unwrap();
        assert_eq!(config.max_tcp_connections_per_ip, 512);
        let config = ServeArgs {
            max_connections_per_ip: Some(1000),
            ..dev()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.max_tcp_connections_per_ip, 2000);
        let below = ServeArgs {
            max_connections_per_ip: Some(10),
            max_tcp_connections_per_ip: Some(9),
            ..dev()
        };
        assert!(below.resolve().is_err());
    }

    /// The shared-database settings: Redis needs a database, a bad URL is refused with a
    /// message naming the flag, and the commit window's default follows the engine.
    #[test]
    fn shared_database_settings_are_checked_and_set_the_commit_window() {
        let dev = || ServeArgs {
            dev: Some(true),
            ..ServeArgs::default()
        };
        let redis_alone = ServeArgs {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..dev()
        };
        let err = redis_alone.resolve().unwrap_err().to_string();
        assert!(err.contains("--redis-url needs --database-url"), "{err}");
        let bad = ServeArgs {
            database_url: Some("mysql://db/quire".into()),
            ..dev()
        };
        let err = bad.resolve().unwrap_err().to_string();
        assert!(err.contains("postgres://"), "{err}");
        assert_eq!(
            dev().resolve().unwrap().commit_window,
            Duration::from_micros(DEFAULT_COMMIT_WINDOW_US)
        );
        let shared = ServeArgs {
            database_url: Some("postgres://quire@127.0.0.1/quire".into()),
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..dev()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            shared.commit_window,
            Duration::from_micros(DEFAULT_SHARED_COMMIT_WINDOW_US)
        );
        assert_eq!(
            shared.shared_poll,
            Duration::from_millis(DEFAULT_SHARED_POLL_MS)
        );
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("quire.toml");
        std::fs::write(&file, "dve = true\n").unwrap();
        assert!(ServeArgs::default().with_file(Some(&file)).is_err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(super::parse_size("1048576"), Some(1 << 20));
        assert_eq!(super::parse_size("128MiB"), Some(128 << 20));
        assert_eq!(super::parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(super::parse_size("64k"), Some(64 << 10));
        assert_eq!(super::parse_size("12 MB"), None);
        assert_eq!(super::parse_size("MiB"), None);
        assert_eq!(super::parse_size("99999999999G"), None);
    }

    #[test]
    fn urls_show_without_their_password() {
        let shown = |text: &str| DatabaseUrl::parse(text).unwrap().to_string();
        assert_eq!(
            shown("postgres://quire:s3cret@db.example:5432/quire?sslmode=require"),
            "postgres://quire:***@db.example:5432/quire?sslmode=require"
        );
        assert_eq!(
            shown("postgresql://quire@127.0.0.1/quire"),
            "postgresql://quire@127.0.0.1/quire"
        );
        assert_eq!(shown("postgres:///quire"), "postgres:///quire");
        assert!(DatabaseUrl::parse("mysql://x/y").is_err());
        assert!(DatabaseUrl::parse("/var/lib/quire").is_err());
    }
}
