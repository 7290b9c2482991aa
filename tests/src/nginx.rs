//! nginx of the test's own in front of test servers: `docs/nginx-cluster.conf`, the
//! configuration the docs give operators, made to listen on a free loopback port without TLS
//! and to point at the test's nodes; run as a child process (Debian's `nginx` package) with a
//! prefix directory of its own.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nginx gets to accept connections after it starts.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long nginx gets to stop its workers and exit.
const STOP_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    prefix: tempfile::TempDir,
    pub addr: SocketAddr,
}

/// The operators' cluster configuration from the docs.
pub fn cluster_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/nginx-cluster.conf")
}

impl Nginx {
    /// Starts nginx with `docs/nginx-cluster.conf` balancing over `nodes`.
    pub fn start_cluster(nodes: &[SocketAddr]) -> Self {
        let doc = std::fs::read_to_string(cluster_config_path()).expect("docs/nginx-cluster.conf");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("binding a free port")
            .port();
        let site = adapt(&doc, nodes, port);
        let prefix = tempfile::tempdir().expect("temporary directory");
        let p = prefix.path().display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n{site}\n}}\n"
        );
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writing nginx.conf");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "starting nginx (Debian's nginx package; the README's test command installs it)",
            );
        let mut nginx = Self {
            child: Some(child),
            prefix,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + READY_WITHIN;
        while TcpStream::connect_timeout(&nginx.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nginx exited with {status}: {}", nginx.log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within {READY_WITHIN:?}: {}",
                nginx.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// nginx's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM, which makes the master stop its workers and exit, waited for up to
    /// [`STOP_WITHIN`]; SIGKILL of the master alone would leave its workers running (and
    /// holding the port).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::wait::terminate(&mut child, STOP_WITHIN);
        }
    }
}

/// The docs' site configuration for loopback: the example nodes replaced by `nodes`, plain
/// HTTP on `port` instead of TLS on 443.
fn adapt(doc: &str, nodes: &[SocketAddr], port: u16) -> String {
    let mut out = String::new();
    let mut nodes_written = false;
    for line in doc.lines() {
        let code = line.split('#').next().unwrap_or_default().trim();
        if code.starts_with("server ") && code.contains(":7700") {
            // The example node's parameters (health: max_fails, fail_timeout) for every node.
            let parameters: Vec<&str> = code
                .trim_end_matches(';')
                .split_whitespace()
                .skip(2)
                .collect();
            if !nodes_written {
                for node in nodes {
                    out.push_str(&format!("    server {node} {};\n", parameters.join(" ")));
                }
                nodes_written = true;
            }
        } else if code.starts_with("listen ") {
            out.push_str(&format!("    listen 127.0.0.1:{port};\n"));
        } else if code.starts_with("ssl_certificate") || code.starts_with("server_name") {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        nodes_written,
        "docs/nginx-cluster.conf lists no upstream server"
    );
    out
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}
