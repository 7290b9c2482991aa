//! A PostgreSQL server of the test's own: `initdb` into a temporary directory, then `postgres`
//! as a child process on a free loopback port, with trust authentication for one user. As
//! root (where `initdb` refuses to run) the directory is given to the `postgres` user and the
//! server runs as that user. The binaries come from `QUIRE_PG_BINDIR`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's packages), else `PATH`.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// The database user the tests connect as.
const USER: &str = "quire";
/// How long PostgreSQL gets to accept connections after it starts.
const READY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    /// The user the server runs as when the tests run as root.
    run_as: Option<(u32, u32)>,
}

impl Postgres {
    /// Initializes a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> Self {
        let bindir = bindir();
        let dir = tempfile::tempdir().expect("temporary directory");
        let run_as = run_as();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let output = command(&bindir, "initdb", run_as)
            .args([
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .args(["--username", USER, "-D"])
            .arg(&data)
            .output()
            .expect("running initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut postgres = Self {
            child: None,
            dir,
            bindir,
            port: free_port(),
            run_as,
        };
        postgres.launch().await;
        postgres
    }

    async fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(
                self.dir.path().join("postgres.log"),
                Some(uid),
                Some(gid),
            );
        }
        let child = command(&self.bindir, "postgres", self.run_as)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.url("postgres")).await {
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                    let _ = conn.close().await;
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {READY_WITHIN:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, db: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connecting to postgres");
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        self.url(db)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Stops at once, like a crash (SIGQUIT: no checkpoint, recovery from the WAL on the next
    /// start), then starts again on the same port.
    pub async fn restart_immediate(&mut self) {
        self.stop_with("-QUIT");
        self.launch().await;
    }

    fn stop_with(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_with("-QUIT");
    }
}

/// `name` from the PostgreSQL binaries, run as `run_as` if given.
fn command(bindir: &Path, name: &str, run_as: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bindir.join(name));
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUIRE_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let found = Command::new("sh")
        .args(["-c", "dirname \"$(command -v initdb)\""])
        .output()
        .expect("looking for initdb");
    let dir = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !dir.is_empty() && found.status.success(),
        "PostgreSQL's initdb was not found: install Debian's `postgresql` package (the README's \
         test command does) or set QUIRE_PG_BINDIR"
    );
    PathBuf::from(dir)
}

/// The `postgres` user's IDs when the tests run as root; `None` otherwise.
fn run_as() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self").ok()?.uid();
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    });
    Some(ids.expect(
        "running as root needs a `postgres` user to run PostgreSQL as (Debian's package makes it)",
    ))
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a free port")
        .port()
}
