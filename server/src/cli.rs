//! The command line: `serve`, `token`, `export`, `import`, `compact`, `backup`, `list`,
//! `verify` ([`crate::cli_verify`]), and the history and trash commands of
//! [`crate::cli_history`].
// The command line answers on standard output by design; logs go to stderr through tracing.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use quire_protocol::yrs::{self, GetString, ReadTxn, Text, Transact};

use crate::auth::{unix_now, Claims, Grant, Secret};
use crate::cli_history as history;
use crate::config::{default_data_dir, DatabaseUrl, ServeArgs, Transport};
use crate::room::{apply_stored, merge_stored};
use crate::store::{AnyStore, Append, Store};
use crate::tls;
use crate::versions::HistoryPolicy;

pub use crate::restore::CONTENT;

#[derive(Debug, Parser)]
#[command(name = "quire-server", version, about = "Quire's self-hosted sync server", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        args: Box<ServeArgs>,
        /// TOML file with settings (the flag names, `-` written `_`); flags and QUIRE_* win.
        #[arg(long, env = "QUIRE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Mint an access token signed with the server's secret.
    Token {
        /// User ID.
        #[arg(long)]
        user: String,
        /// Display name (default: the user ID).
        #[arg(long)]
        name: Option<String>,
        /// Document ID patterns the token grants (`*` matches anything); repeatable.
        #[arg(long = "docs", required = true)]
        docs: Vec<String>,
        /// Grant read-write access (default: read-only).
        #[arg(long)]
        write: bool,
        /// Lifetime: a number with s, m, h or d (e.g. 90m, 30d).
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        store: StoreArgs,
        /// Signing secret (base64url); default: the data directory's secret.key.
        #[arg(long, env = "QUIRE_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Print a document's text, or a JSON description of it.
    Export {
        doc: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write to this new file (owner-only, mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create a document from a UTF-8 text file (refused if the document has content).
    Import {
        doc: String,
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Merge update logs into snapshots now (one document, or all).
    Compact {
        doc: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a consistent copy of the database to FILE; safe while the server runs.
    Backup {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Compare what running servers hold with the store, by state digest; exits 1 on any
    /// difference, 2 if the store could not be read.
    Verify {
        /// Only this document (default: every document a node has loaded).
        doc: Option<String>,
        /// A node's address, http://host:port or https://host:port; repeatable.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// A PEM certificate to trust for https nodes (a node's own, or its CA); repeatable.
        #[arg(long = "ca-cert")]
        ca_certs: Vec<PathBuf>,
        /// How long a node that is behind the store may take to catch up, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        settle: Duration,
        #[command(flatten)]
        store: StoreArgs,
        /// The nodes' token secret (base64url); default: the data directory's secret.key.
        #[arg(long, env = "QUIRE_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// List stored documents.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List a document's versions, newest first.
    Versions {
        doc: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Save a document as it is stored now as a named version.
    Version {
        doc: String,
        /// The version's name (1 to 100 bytes).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// Make a document's text equal to a version's, as a new edit (the server must be
    /// stopped; while it runs, restore from the app).
    Restore {
        doc: String,
        /// The version's ID, from `versions`.
        version: u64,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// List the trash, or move DOC to it (the server must be stopped for that; while it
    /// runs, delete from the app).
    Trash {
        doc: Option<String>,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// Bring a document back from the trash.
    Untrash {
        doc: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete for good the documents whose time in the trash is up, or DOC (which must be in
    /// the trash) now.
    Purge {
        doc: Option<String>,
        #[command(flatten)]
        history: HistoryArgs,
    },
}

/// The store, and the history settings a command applies (as `serve` takes them).
#[derive(Debug, clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Versions kept per document.
    #[arg(long, env = "QUIRE_VERSION_MAX_COUNT")]
    version_max_count: Option<u32>,
    /// Bytes of versions kept per document, e.g. `64MiB`.
    #[arg(long, env = "QUIRE_VERSION_MAX_BYTES")]
    version_max_bytes: Option<String>,
    /// Days a trashed document can be brought back.
    #[arg(long, env = "QUIRE_TRASH_RETENTION_DAYS")]
    trash_retention_days: Option<u32>,
}

impl HistoryArgs {
    fn policy(&self) -> anyhow::Result<HistoryPolicy> {
        Ok(crate::config::resolve_history(
            None,
            self.version_max_count,
            self.version_max_bytes.as_deref(),
            self.trash_retention_days,
        )?)
    }
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// Data directory of the server.
    #[arg(long, env = "QUIRE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The server's PostgreSQL database, if it keeps documents there (as `serve` takes it).
    #[arg(long, env = "QUIRE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreArgs {
    fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The store these arguments name: PostgreSQL if a URL is given, else the data
    /// directory's SQLite (created if missing).
    async fn open(&self) -> anyhow::Result<AnyStore> {
        let url = self
            .database_url
            .as_deref()
            .map(DatabaseUrl::parse)
            .transpose()?;
        open_store(url.as_ref(), &self.dir()).await
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90m or 30d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in `{text}`: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        crate::allocator::restart_with_settings();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { args, config } => serve((*args).with_file(config.as_deref())?).await,
        Command::Token {
            user,
            name,
            docs,
            write,
            ttl,
            store,
            secret,
        } => {
            let secret = load_secret(secret.as_deref(), &store.dir())?;
            let claims = Claims {
                name: name.unwrap_or_else(|| user.clone()),
                sub: user,
                exp: unix_now() + ttl.as_secs(),
                nbf: None,
                docs: docs
                    .into_iter()
                    .map(|pattern| Grant { pattern, write })
                    .collect(),
            };
            println!("{}", secret.sign(&claims));
            Ok(())
        }
        Command::Export {
            doc,
            format,
            output,
            store,
        } => {
            let store = store.open().await?;
            match output {
                None => export(&store, &doc, format, &mut std::io::stdout().lock()).await,
                Some(path) => {
                    if path.exists() {
                        bail!("{} exists; choose a new file", path.display());
                    }
                    let mut file = crate::private::create_file(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    export(&store, &doc, format, &mut file).await?;
                    file.sync_all()?;
                    Ok(())
                }
            }
        }
        Command::Import { doc, file, store } => import(&store.open().await?, &doc, &file).await,
        Command::Compact { doc, store } => {
            let store = store.open().await?;
            let docs = match doc {
                Some(doc) => vec![doc],
                None => store.list().await?,
            };
            for doc in &docs {
                store.compact(doc, merge_stored).await?;
            }
            println!("compacted {} document(s)", docs.len());
            Ok(())
        }
        Command::Backup { file, store } => {
            if file.exists() {
                bail!("{} exists; choose a new file", file.display());
            }
            store.open().await?.backup(&file).await?;
            println!("backup written to {}", file.display());
            Ok(())
        }
        Command::Verify {
            doc,
            nodes,
            ca_certs,
            settle,
            store,
            secret,
        } => {
            let secret = load_secret(secret.as_deref(), &store.dir())?;
            let tls = crate::cli_verify::trusting(&ca_certs)?;
            let store = store.open().await?;
            let only = doc.as_deref();
            // 1 for a difference found, 2 when the comparison itself could not be made.
            match crate::cli_verify::verify(&store, &secret, &nodes, tls.as_ref(), only, settle)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => std::process::exit(1),
                Err(err) => {
                    eprintln!("Error: {err:#}");
                    std::process::exit(2);
                }
            }
        }
        Command::List { store } => {
            for doc in store.open().await?.list().await? {
                println!("{doc}");
            }
            Ok(())
        }
        Command::Versions { doc, store } => {
            history::list_versions(&store.open().await?, &doc).await
        }
        Command::Version { doc, name, history } => {
            let store = history.store.open().await?;
            history::create_version(&store, &doc, &name, &history.policy()?).await
        }
        Command::Restore {
            doc,
            version,
            history,
        } => {
            let dir = history.store.dir();
            let store = history.store.open().await?;
            history::restore(&store, &dir, &doc, version, &history.policy()?).await
        }
        Command::Trash { doc, history } => {
            let dir = history.store.dir();
            let store = history.store.open().await?;
            match doc {
                Some(doc) => history::trash(&store, &dir, &doc).await,
                None => history::list_trash(&store, &history.policy()?).await,
            }
        }
        Command::Untrash { doc, store } => history::untrash(&store.open().await?, &doc).await,
        Command::Purge { doc, history } => {
            let store = history.store.open().await?;
            history::purge(&store, doc.as_deref(), &history.policy()?).await
        }
    }
}

/// Creates the data directory owner-only (`0700`) if it is missing.
fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    crate::private::create_dir(dir).with_context(|| format!("creating {}", dir.display()))
}

async fn open_store(url: Option<&DatabaseUrl>, dir: &Path) -> anyhow::Result<AnyStore> {
    if let Some(url) = url {
        return AnyStore::open(Some(url), dir)
            .await
            .with_context(|| format!("opening the database at {url}"));
    }
    create_data_dir(dir)?;
    AnyStore::open(None, dir)
        .await
        .with_context(|| format!("opening the database in {}", dir.display()))
}

fn load_secret(flag: Option<&str>, dir: &Path) -> anyhow::Result<Secret> {
    use base64::Engine;
    if let Some(text) = flag {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .context("--secret / QUIRE_SECRET must be base64url")?;
        if bytes.len() < 16 {
            bail!("the secret must be at least 16 bytes");
        }
        return Ok(Secret::new(bytes));
    }
    create_data_dir(dir)?;
    Secret::load_or_create(dir).with_context(|| format!("reading the secret in {}", dir.display()))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    raise_open_file_limit();
    warn_if_data_dir_is_open(&config.data_dir);
    create_data_dir(&config.data_dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "quire-server {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "data directory: {}", config.data_dir.display())?;
    if let Some(url) = &config.database_url {
        writeln!(out, "database: {url}")?;
    }
    let secret = if config.no_auth {
        tracing::warn!(
            "--no-auth: EVERY client that reaches this port can read and write EVERY document"
        );
        writeln!(
            out,
            "WARNING: authentication is off (--no-auth); anyone who can connect has full access"
        )?;
        None
    } else {
        Some(load_secret(config.secret.as_deref(), &config.data_dir)?)
    };
    let (tls, scheme) = match &config.transport {
        Transport::Dev => {
            let (identity, path) = tls::dev_identity(&config.data_dir)?;
            writeln!(
                out,
                "dev certificate: {} (self-signed, for development only)",
                path.display()
            )?;
            writeln!(out, "dev certificate SHA-256: {}", identity.fingerprint())?;
            (Some(identity.server_config()?), "wss")
        }
        Transport::Tls { cert, key } => (
            Some(tls::Identity::load(cert, key)?.server_config()?),
            "wss",
        ),
        Transport::Plain => {
            tracing::warn!("plain ws:// without TLS: only run this behind a TLS-terminating proxy");
            (None, "ws")
        }
    };
    let _lock = crate::serve_lock::try_lock(&config.data_dir).with_context(|| {
        format!(
            "locking {} (is another server using it?)",
            config.data_dir.display()
        )
    })?;
    let store = Arc::new(open_store(config.database_url.as_ref(), &config.data_dir).await?);
    let listener =
        crate::http::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let listener =
                crate::http::bind(addr).with_context(|| format!("binding {addr} for metrics"))?;
            writeln!(out, "metrics on http://{}/metrics", listener.local_addr()?)?;
            Some(listener)
        }
        None => None,
    };
    writeln!(
        out,
        "listening on {scheme}://{local}{}",
        quire_protocol::handshake::WS_PATH
    )?;
    out.flush()?;
    drop(out);
    tracing::info!(%local, "serving");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    crate::serve::run(
        config,
        secret,
        store.clone(),
        listener,
        metrics_listener,
        acceptor,
        crate::shutdown::signal(),
    )
    .await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every client holds a socket, and the
/// usual soft default (1024) would refuse clients long before memory or CPU run out. The
/// hard limit is the operator's (systemd `LimitNOFILE=`, `ulimit -Hn`); it is not touched.
fn raise_open_file_limit() {
    let before = rlimit::Resource::NOFILE.get();
    match (before, rlimit::increase_nofile_limit(u64::MAX)) {
        (Ok((soft_before, hard)), Ok(soft)) => {
            tracing::info!(soft_before, soft, hard, "open-file limit")
        }
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(error = %err, "could not raise the open-file limit")
        }
    }
}

/// Warns when an existing data directory lets its group or others in: it holds the token
/// secret, the TLS key and every document. The server does not change it (the operator may
/// have reasons); `chmod 700` does.
fn warn_if_data_dir_is_open(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the data directory is open to its group or others; it should be 0700 (chmod 700)"
        ),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot read the data directory's mode")
        }
    }
}

async fn load_doc(store: &AnyStore, doc: &str) -> anyhow::Result<yrs::Doc> {
    let stored = store.load(doc).await?;
    if stored.is_empty() {
        bail!("no document `{doc}`");
    }
    let ydoc = yrs::Doc::new();
    apply_stored(&ydoc, &stored)
        .map_err(|e| anyhow::anyhow!("document `{doc}` is corrupt: {e}"))?;
    Ok(ydoc)
}

async fn export(
    store: &AnyStore,
    doc: &str,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let ydoc = load_doc(store, doc).await?;
    let text = ydoc.get_or_insert_text(CONTENT);
    let txn = ydoc.transact();
    let content = text.get_string(&txn);
    match format {
        Format::Text => write!(out, "{content}")?,
        Format::Json => {
            let state_vector: serde_json::Map<String, serde_json::Value> = txn
                .state_vector()
                .iter()
                .map(|(client, clock)| (client.get().to_string(), (*clock).into()))
                .collect();
            let json =
                serde_json::json!({ "id": doc, "content": content, "state_vector": state_vector });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn import(store: &AnyStore, doc: &str, file: &Path) -> anyhow::Result<()> {
    quire_protocol::DocId::parse(doc, quire_protocol::Limits::DEFAULT_MAX_DOC_ID_LEN)
        .map_err(|_| anyhow::anyhow!("`{doc}` is not a valid document ID"))?;
    if !store.load(doc).await?.is_empty() {
        bail!("document `{doc}` already has content; import only creates new documents");
    }
    let content =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ydoc = yrs::Doc::new();
    let text = ydoc.get_or_insert_text(CONTENT);
    text.insert(&mut ydoc.transact_mut(), 0, &content);
    let update = ydoc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    store.append_batch(&[Append { doc, data: &update }]).await?;
    println!("imported {} bytes of text into `{doc}`", content.len());
    Ok(())
}
