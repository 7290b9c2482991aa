//! The real server binary as a child process: started on port 0 in a temporary data directory
//! with `--dev` TLS (or plain ws:// for tools that cannot speak TLS), restarted on the same port and directory, killed with SIGKILL or stopped
//! with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

/// Where the `quire-server` binary is: `QUIRE_SERVER_BIN`, else beside the test executable's
/// `deps/` directory (cargo builds it there with `cargo build --bins`).
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIRE_SERVER_BIN") {
        return PathBuf::from(path);
    }
    built_binary("quire-server")
}

/// A binary of this workspace, beside the test executable's `deps/` directory (cargo builds
/// it there with `cargo build --workspace --bins`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A running (or stopped) server with its data directory.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    data: Arc<tempfile::TempDir>,
    pub addr: SocketAddr,
    pub fingerprint: String,
    /// The separate metrics address the server printed (`--metrics-listen`), if any.
    pub metrics_addr: Option<SocketAddr>,
    extra: Vec<String>,
    /// `--dev` (self-signed TLS) or `--insecure-plain-ws`, kept across restarts.
    transport: &'static str,
    /// Environment for the server process (e.g. its own `RUST_LOG`), kept across restarts.
    env: Vec<(String, String)>,
    /// A command the server runs under (e.g. `fiu-run -x`), kept across restarts until
    /// [`ServerProcess::set_wrapper`] changes it; empty to run the binary directly.
    wrapper: Vec<String>,
}

impl ServerProcess {
    /// Starts a server with `--dev` on 127.0.0.1:0 and the given extra flags.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Like [`ServerProcess::start`], with extra environment variables for this server only
    /// (`RUST_LOG` here overrides `QUIRE_TEST_LOG`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with_transport("--dev", extra, env)
    }

    /// Starts a server serving plain ws:// (`--insecure-plain-ws`) instead of TLS, for outside
    /// tools without TLS support (the WebSocket conformance suite). [`ServerProcess::url`],
    /// [`ServerProcess::tls`] and the fingerprint do not apply to it.
    pub fn start_plain_ws(extra: &[&str]) -> Self {
        Self::start_with_transport("--insecure-plain-ws", extra, &[])
    }

    /// Like [`ServerProcess::start_with_env`], with the server run under `wrapper`, a command
    /// that ends by exec'ing its arguments (so the process id stays the server's), e.g.
    /// `["fiu-run", "-x"]` to inject I/O failures into the unmodified binary.
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(wrapper, "127.0.0.1:0", "--dev", extra, env)
    }

    /// Like [`ServerProcess::start_wrapped`], listening on `listen` (an address inside a
    /// network namespace the test made, with port 0) instead of 127.0.0.1:0.
    pub fn start_wrapped_at(
        wrapper: &[&str],
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(wrapper, listen, "--dev", extra, env)
    }

    /// The wrapper for the next [`ServerProcess::restart`] (empty: run the binary directly).
    pub fn set_wrapper(&mut self, wrapper: &[&str]) {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
    }

    fn start_with_transport(transport: &'static str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(&[], "127.0.0.1:0", transport, extra, env)
    }

    fn start_full(
        wrapper: &[&str],
        listen: &str,
        transport: &'static str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        // Owner-only, as the server makes its own (a more open one makes it warn at start).
        let data = Arc::new(
            tempfile::Builder::new()
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .expect("temporary data directory"),
        );
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr, fingerprint, metrics_addr) = spawn(
            &wrapper,
            data.path(),
            listen.parse().expect("a listen address"),
            transport,
            &extra,
            &env,
        );
        Self {
            child: Some(child),
            data,
            addr,
            fingerprint,
            metrics_addr,
            extra,
            transport,
            env,
            wrapper,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The node's HTTP address as `quire-server verify --node` takes it, with the
    /// certificate to trust for it (`None` for plain ws://).
    pub fn http_base(&self) -> (String, Option<PathBuf>) {
        if self.transport == "--insecure-plain-ws" {
            (format!("http://{}", self.addr), None)
        } else {
            let cert = self.data.path().join("dev-cert.pem");
            (format!("https://{}", self.addr), Some(cert))
        }
    }

    /// `wss://ADDR:PORT/ws`
    pub fn url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// A TLS client configuration trusting this server's dev certificate.
    pub fn tls(&self) -> Arc<ClientConfig> {
        crate::tls::client_config(&self.data.path().join("dev-cert.pem"))
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the process to exit; returns its exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("server running");
        let started = Instant::now();
        signal(child.id(), "TERM");
        let status = child.wait().expect("waiting for the server");
        (status, started.elapsed())
    }

    /// Pauses the process (SIGSTOP): its sockets stay open and nothing answers on them.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Sends SIGTERM and returns at once; [`ServerProcess::wait_exit`] waits for the end.
    pub fn sigterm(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits without blocking the runtime until the process exits, failing after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("server running");
        let status = crate::wait::until("the server to exit", deadline, || {
            let status = child.try_wait().expect("polling the server process");
            std::future::ready(status)
        })
        .await;
        self.child = None;
        status
    }

    /// The SQLite database inside the data directory.
    pub fn db_path(&self) -> PathBuf {
        self.data.path().join("quire.db")
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = if self.transport == "--insecure-plain-ws" {
            crate::http_probe::get_plain(self.addr, "/metrics").await
        } else {
            crate::http_probe::get(self.addr, self.tls(), "/metrics").await
        };
        assert_eq!(response.status, 200, "GET /metrics: {response:?}");
        response.body
    }

    /// One figure from `/metrics` (`name` may carry labels); 0 when the series is absent.
    pub async fn metric(&self, name: &str) -> f64 {
        crate::http_probe::metric(&self.metrics().await, name).unwrap_or(0.0)
    }

    /// Starts the server again on the same address and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The old socket may linger briefly; retry the bind until the deadline.
            match try_spawn(
                &self.wrapper,
                self.data.path(),
                self.addr,
                self.transport,
                &self.extra,
                &self.env,
            ) {
                Ok((child, addr, fingerprint, metrics_addr)) => {
                    self.child = Some(child);
                    self.addr = addr;
                    self.fingerprint = fingerprint;
                    self.metrics_addr = metrics_addr;
                    return;
                }
                Err(err) if Instant::now() < deadline => {
                    eprintln!("restart failed, retrying: {err}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("could not restart the server: {err}"),
            }
        }
    }

    /// Replaces the extra flags used from the next [`ServerProcess::restart`] on.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Mints a token with the server's secret.
    pub fn token(&self, docs: &[&str], write: bool, ttl: &str) -> String {
        let mut command = Command::new(server_binary());
        command.args([
            "token",
            "--user",
            "tester",
            "--name",
            "Tester",
            "--ttl",
            ttl,
            "--data-dir",
        ]);
        command.arg(self.data.path());
        for pattern in docs {
            command.args(["--docs", pattern]);
        }
        if write {
            command.arg("--write");
        }
        let output = command.output().expect("running quire-server token");
        assert!(
            output.status.success(),
            "token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8 token")
            .trim()
            .to_owned()
    }

    /// Runs another subcommand against this server's data directory; returns its output.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        command_in(self.data.path(), args)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }
}

/// The standard output of a command that must have succeeded (its standard error otherwise).
pub fn stdout_of(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs a `quire-server` subcommand against the data directory `data_dir`.
pub fn command_in(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(server_binary())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("running quire-server")
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "kill -{name} {pid} failed"
    );
}

/// A started server: its process, address, dev certificate fingerprint and metrics address.
type Started = (Child, SocketAddr, String, Option<SocketAddr>);

fn spawn(
    wrapper: &[String],
    data: &Path,
    listen: SocketAddr,
    transport: &str,
    extra: &[String],
    env: &[(String, String)],
) -> Started {
    try_spawn(wrapper, data, listen, transport, extra, env)
        .unwrap_or_else(|err| panic!("starting the server: {err}"))
}

fn try_spawn(
    wrapper: &[String],
    data: &Path,
    listen: SocketAddr,
    transport: &str,
    extra: &[String],
    env: &[(String, String)],
) -> Result<Started, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))
        .map_err(|e| e.to_string())?;
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(server_binary());
            command
        }
        None => Command::new(server_binary()),
    };
    let mut child = command
        .args([
            "serve",
            transport,
            "--listen",
            &listen.to_string(),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("QUIRE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut fingerprint = None;
        let mut metrics = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(value) = line.strip_prefix("dev certificate SHA-256: ") {
                fingerprint = Some(value.to_owned());
            }
            if let Some(url) = line.strip_prefix("metrics on http://") {
                metrics = url.trim_end_matches("/metrics").parse::<SocketAddr>().ok();
            }
            if let Some(url) = line.strip_prefix("listening on ") {
                let addr = url
                    .trim_start_matches("wss://")
                    .trim_start_matches("ws://")
                    .trim_end_matches("/ws");
                let _ = tx.send((
                    addr.to_owned(),
                    fingerprint.clone().unwrap_or_default(),
                    metrics,
                ));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((addr, fingerprint, metrics)) => Ok((
            child,
            addr.parse().map_err(|e| format!("{e}: {addr}"))?,
            fingerprint,
            metrics,
        )),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            Err(format!("server did not start ({status:?}): {tail}"))
        }
    }
}
