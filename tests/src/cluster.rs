//! What the servers of a cluster test share: a PostgreSQL database and a Redis server of the
//! test's own, one token secret, and the flags that point a node at them.

use std::sync::Arc;
use std::time::Duration;

use quire_client::{Access, Client, ClientConfig, ConnectionState, DocHandle, MemoryStore, Trust};

use quire_protocol::{ChannelId, StateDigest};

use crate::client_util::until_state;
use crate::digests::{until_converged, verify, Verified};
use crate::doc_peer::Peer;
use crate::postgres::Postgres;
use crate::redis::Redis;
use crate::server_process::{command_in, stdout_of, ServerProcess};

/// The nodes' shared token secret (base64url of 32 bytes).
pub const SECRET: &str = "cXVpcmUtY2x1c3Rlci10ZXN0cy1zaGFyZWQtc2VjcmV0";

#[derive(Debug)]
pub struct Backends {
    pub postgres: Postgres,
    pub redis: Redis,
    pub database_url: String,
    pub redis_url: String,
    /// A data directory for the command line (tokens, exports).
    dir: tempfile::TempDir,
}

impl Backends {
    /// Starts PostgreSQL with an empty database `db`, and Redis.
    pub async fn start(db: &str) -> Self {
        let postgres = Postgres::start().await;
        let database_url = postgres.create_database(db).await;
        let redis = Redis::start();
        let redis_url = redis.url();
        Self {
            postgres,
            redis,
            database_url,
            redis_url,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// A node's flags: the database, Redis, the shared secret, then `extra`.
    pub fn flags<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut flags = vec![
            "--database-url",
            self.database_url.as_str(),
            "--redis-url",
            self.redis_url.as_str(),
            "--secret",
            SECRET,
        ];
        flags.extend_from_slice(extra);
        flags
    }

    /// A read-write token for every document, valid on every node.
    pub fn token(&self) -> String {
        let output = command_in(
            self.dir.path(),
            &[
                "token", "--user", "t", "--docs", "*", "--write", "--secret", SECRET,
            ],
        );
        stdout_of(output).trim().to_owned()
    }

    /// Waits until every node in `nodes` and every replica `replicas` lists (document,
    /// digest) hold PostgreSQL's state digest of each of `docs` (`quire-server verify`).
    pub async fn until_converged<F>(
        &self,
        nodes: &[&ServerProcess],
        docs: &[&str],
        deadline: Duration,
        replicas: F,
    ) where
        F: FnMut() -> Vec<(String, StateDigest)>,
    {
        let store = ["--database-url", self.database_url.as_str()];
        until_converged(nodes, &store, Some(SECRET), docs, deadline, replicas).await;
    }

    /// [`Backends::until_converged`] for raw peers, each holding `doc` on `channel`.
    pub async fn until_peers_converged(
        &self,
        nodes: &[&ServerProcess],
        doc: &str,
        channel: ChannelId,
        peers: &[&Peer],
    ) {
        let replicas = || {
            peers
                .iter()
                .map(|peer| (doc.to_owned(), peer.digest(channel)))
                .collect()
        };
        self.until_converged(nodes, &[doc], crate::wait::DEADLINE, replicas)
            .await;
    }

    /// `quire-server verify` of `doc` on `nodes` against PostgreSQL, once.
    pub async fn verify(&self, nodes: &[&ServerProcess], doc: &str) -> Verified {
        let store = ["--database-url", self.database_url.as_str()];
        verify(nodes, &store, Some(SECRET), Some(doc)).await
    }

    /// A document's text as PostgreSQL holds it (the command line's `export`).
    pub fn stored_text(&self, doc: &str) -> String {
        stdout_of(command_in(
            self.dir.path(),
            &["export", doc, "--database-url", self.database_url.as_str()],
        ))
    }
}

/// Waits until each of `servers` has both its connections to Redis up.
pub async fn until_on_redis(servers: &[&ServerProcess]) {
    for server in servers {
        crate::wait::until(
            "both connections to Redis",
            crate::wait::DEADLINE,
            || async { (server.metric("quire_redis_up").await == 1.0).then_some(()) },
        )
        .await;
    }
}

/// A `quire-client` at `url` (plain `ws://`), its edits kept in memory.
pub fn client(url: &str, token: &str) -> Client {
    let mut config = ClientConfig::new(url.to_owned(), Trust::WebPki, Some(token.to_owned()));
    config.client_name = "quire-tests".into();
    Client::start(config, Arc::new(MemoryStore::default()))
}

/// Opens `doc` for writing and waits until the client is connected.
pub async fn open_connected(client: &Client, doc: &str, deadline: Duration) -> DocHandle {
    let handle = client.open(doc, Access::Write).await.expect("opening");
    until_state(&mut client.state(), "connected", deadline, |s| {
        matches!(s, ConnectionState::Connected { .. })
    })
    .await;
    handle
}
