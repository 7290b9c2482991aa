//! The desktop app under test: an Xvfb display, tauri-driver (with Debian's WebKitWebDriver)
//! on free ports, and the real `quire-desktop` binary with its own configuration and data
//! directories and pre-seeded settings pointing at a test server.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server_process::ServerProcess;
use crate::webdriver::{call, WebDriver};

/// The built app.
pub fn desktop_binary() -> PathBuf {
    crate::server_process::built_binary("quire-desktop")
}

/// Whether the end-to-end prerequisites are set up (scripts/test.sh does it and sets
/// QUIRE_E2E_DESKTOP=1). Without it the desktop tests say so and do nothing.
pub fn enabled() -> bool {
    let on = std::env::var("QUIRE_E2E_DESKTOP").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("desktop end-to-end tests need QUIRE_E2E_DESKTOP=1 (scripts/test.sh sets it up); not run");
    }
    on
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A virtual display for one test.
#[derive(Debug)]
pub struct Display {
    child: Child,
    pub number: u32,
}

/// How long Xvfb has to remove its lock and socket after SIGTERM before it is killed.
const XVFB_STOP_WITHIN: Duration = Duration::from_secs(5);

impl Display {
    /// Starts Xvfb on the first display number no running X server holds. Another test may
    /// take the same number at the same moment: the display is ours only once its lock file
    /// names our Xvfb, and if that Xvfb exits instead, the next number is tried.
    pub fn start() -> Self {
        for number in 90..400 {
            if display_in_use(number) {
                continue;
            }
            let mut child = Command::new("Xvfb")
                .args([
                    &format!(":{number}"),
                    "-screen",
                    "0",
                    "1280x800x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting Xvfb (apt-get install xvfb)");
            let socket = format!("/tmp/.X11-unix/X{number}");
            let mut exited = false;
            wait_until("the X display", Duration::from_secs(20), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited || (lock_pid(number) == Some(child.id()) && Path::new(&socket).exists())
            });
            if !exited {
                return Self { child, number };
            }
        }
        panic!("no free X display number in 90..400");
    }
}

/// The process named in display `number`'s lock file, if there is a lock.
fn lock_pid(number: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/tmp/.X{number}-lock")).ok()?;
    text.trim().parse().ok()
}

/// Whether a running X server holds display `number`. A lock left by one that was killed
/// names a process that is gone: it is removed, with its socket, and the number is free
/// (Xvfb would remove them itself; removing them first keeps a stale socket from looking
/// like a live display).
fn display_in_use(number: u32) -> bool {
    let lock = format!("/tmp/.X{number}-lock");
    match lock_pid(number) {
        Some(pid) if !Path::new(&format!("/proc/{pid}")).exists() => {
            let _ = std::fs::remove_file(&lock);
            let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{number}"));
            false
        }
        Some(_) => true,
        // No lock, or one still being written (taken, then).
        None => Path::new(&lock).exists(),
    }
}

impl Drop for Display {
    /// SIGTERM, so that Xvfb removes its lock file and socket (SIGKILL would leave them, and
    /// every number would look taken after a few hundred tests); killed if it does not stop.
    fn drop(&mut self) {
        crate::wait::terminate(&mut self.child, XVFB_STOP_WITHIN);
    }
}

/// The app's settings file contents.
pub fn settings(server: &ServerProcess, token: &str, name: &str) -> serde_json::Value {
    json!({
        "serverUrl": server.url(),
        "token": token,
        "localOnly": false,
        "displayName": name,
        "color": "#e06c75",
        "trustedFingerprint": server.fingerprint,
    })
}

/// One app installation (its directories) that can be launched and quit repeatedly.
#[derive(Debug)]
pub struct Desktop {
    pub dirs: tempfile::TempDir,
    display: Display,
    driver: Option<Child>,
    driver_addr: SocketAddr,
}

impl Desktop {
    /// Prepares directories with `settings` (None: first run) and a display.
    pub fn new(settings: Option<serde_json::Value>) -> Self {
        let dirs = tempfile::tempdir().expect("app directories");
        std::fs::create_dir_all(dirs.path().join("config")).unwrap();
        std::fs::create_dir_all(dirs.path().join("data")).unwrap();
        if let Some(settings) = settings {
            std::fs::write(
                dirs.path().join("config/settings.json"),
                settings.to_string(),
            )
            .unwrap();
        }
        Self {
            dirs,
            display: Display::start(),
            driver: None,
            driver_addr: "127.0.0.1:0".parse().unwrap(),
        }
    }

    /// Where the app's file dialogs point in tests: a save lands here under the suggested
    /// name, an open picks every Markdown file here (see the app's `files` module).
    pub fn files_dir(&self) -> PathBuf {
        let dir = self.dirs.path().join("files");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts tauri-driver and a session, which launches the app.
    pub async fn launch(&mut self) -> WebDriver {
        let port = free_port();
        let driver = Command::new(tauri_driver())
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &free_port().to_string(),
            ])
            .args(["--native-driver", "/usr/bin/WebKitWebDriver"])
            .env("DISPLAY", format!(":{}", self.display.number))
            .env("QUIRE_DESKTOP_CONFIG_DIR", self.dirs.path().join("config"))
            .env("QUIRE_DESKTOP_DATA_DIR", self.dirs.path().join("data"))
            .env("QUIRE_DESKTOP_DIALOG_DIR", self.files_dir())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dirs.path().join("driver.log")).unwrap())
            // A group of its own, so that its WebKitWebDriver goes with it (see `stop_driver`).
            .process_group(0)
            .spawn()
            .expect("starting tauri-driver (cargo install tauri-driver --locked)");
        self.driver = Some(driver);
        self.driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let addr = self.driver_addr;
        let start = Instant::now();
        while call(addr, "GET", "/status", None).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tauri-driver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let app = desktop_binary();
        WebDriver::start(addr, app.to_str().unwrap())
            .await
            .expect("a WebDriver session running the app")
    }

    /// A PNG of the whole virtual display (window, menu bar and all), taken with ImageMagick.
    pub fn screenshot(&self, path: &Path) {
        let status = Command::new("import")
            .args([
                "-display",
                &format!(":{}", self.display.number),
                "-window",
                "root",
            ])
            .arg(path)
            .status()
            .expect("running import (apt-get install imagemagick)");
        assert!(status.success(), "import failed");
    }

    /// Quits the app (ends the session) and stops the driver.
    pub async fn quit(&mut self, session: WebDriver) {
        session.quit().await;
        self.stop_driver();
    }

    /// Kills tauri-driver with the WebKitWebDriver it started (its process group): killing
    /// tauri-driver alone left one WebKitWebDriver behind per test.
    fn stop_driver(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", driver.id())])
                .status();
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.stop_driver();
    }
}

fn tauri_driver() -> PathBuf {
    if let Some(path) = std::env::var_os("TAURI_DRIVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cargo_bin = home.join(".cargo/bin/tauri-driver");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("tauri-driver")
    }
}
