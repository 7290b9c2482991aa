//! File modes: the data directory is owner-only (0700) and every file the server or the
//! command line writes is 0600, even under a umask of 000; a data directory open to others
//! is warned about at `serve` start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use quire_protocol::ChannelId;
use quire_tests::doc_peer::Peer;
use quire_tests::server_process::{server_binary, ServerProcess};
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);

/// Runs the rest of its arguments under umask 000 (`sh -c SCRIPT ARG0 ARGS...`).
const PERMISSIVE_UMASK: [&str; 3] = ["sh", "-c", "umask 000 && exec \"$0\" \"$@\""];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A `quire-server` subcommand under umask 000.
fn permissive(args: &[&str], data_dir: &Path) -> Output {
    let output = Command::new(PERMISSIVE_UMASK[0])
        .args(&PERMISSIVE_UMASK[1..])
        .arg(server_binary())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("running quire-server");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn serve_backup_and_export_write_owner_only_files_under_a_permissive_umask() {
    let server = ServerProcess::start_wrapped(&PERMISSIVE_UMASK, &[], &[]);
    let token = server.token(&["*"], true, "1h");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "files/doc").await;
    peer.append(CH, "secret text").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;

    // Everything the server made in its data directory while serving: the database with its
    // WAL and shared-memory files, the token secret, the dev certificate and key.
    let data = server.data_dir();
    let db = server.db_path();
    let wal = data.join("quire.db-wal");
    let shm = data.join("quire.db-shm");
    for path in [&db, &wal, &shm] {
        assert!(path.exists(), "{} exists while serving", path.display());
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        // The harness's own log of the server's stderr is not the server's file.
        if path.file_name().is_some_and(|name| name == "server.log") {
            continue;
        }
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        seen += 1;
    }
    assert!(
        seen >= 6,
        "database, -wal, -shm, secret and dev cert and key"
    );

    // The command line, beside the live server and under the same umask.
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("copy.db");
    permissive(&["backup", backup.to_str().unwrap()], data);
    assert_eq!(mode(&backup), 0o600, "backup");
    let export = out.path().join("doc.txt");
    permissive(
        &["export", "files/doc", "--output", export.to_str().unwrap()],
        data,
    );
    assert_eq!(mode(&export), 0o600, "export");
    assert_eq!(std::fs::read_to_string(&export).unwrap(), "secret text");
    let json = out.path().join("doc.json");
    permissive(
        &[
            "export",
            "files/doc",
            "--format",
            "json",
            "-o",
            json.to_str().unwrap(),
        ],
        data,
    );
    assert_eq!(mode(&json), 0o600, "export --format json");
    // An existing file is never replaced.
    let again = Command::new(server_binary())
        .args([
            "export",
            "files/doc",
            "-o",
            export.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(data)
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[tokio::test]
async fn a_data_directory_the_command_line_creates_is_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh/quire");
    permissive(&["list"], &data);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("quire.db")), 0o600);
}

/// How often `needle` appears in the server's log so far.
fn count(server: &ServerProcess, needle: &str) -> usize {
    server.log().matches(needle).count()
}

/// Restarts the stopped server with its data directory at `mode` and waits until it serves;
/// returns how many warnings about the directory's mode the restart logged.
async fn restart_with_mode(server: &mut ServerProcess, mode: u32) -> usize {
    const WARNING: &str = "data directory is open";
    std::fs::set_permissions(server.data_dir(), std::fs::Permissions::from_mode(mode)).unwrap();
    let (warnings, served) = (count(server, WARNING), count(server, " serving "));
    server.restart();
    wait::until("the restart to serve", wait::DEADLINE, || {
        std::future::ready((count(server, " serving ") > served).then_some(()))
    })
    .await;
    count(server, WARNING) - warnings
}

#[tokio::test]
async fn serve_warns_when_the_data_directory_is_open_to_others() {
    let mut server = ServerProcess::start(&[]);
    server.terminate();
    assert_eq!(restart_with_mode(&mut server, 0o700).await, 0);
    server.terminate();
    assert_eq!(restart_with_mode(&mut server, 0o750).await, 1);
    let log = server.log();
    assert!(log.contains("WARN") && log.contains("750"), "{log}");
    // The server leaves the operator's mode alone.
    assert_eq!(mode(server.data_dir()), 0o750);
}
