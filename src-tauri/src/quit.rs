//! Quitting without losing the last keystrokes. Edits travel from the webview to the Rust side
//! over asynchronous IPC, so closing the window could drop the ones still on their way. On a
//! close request the window stays open, the webview is asked to flush (`quit-requested`), and
//! the app exits when it answers (`ready_to_quit`) or after a bound, whichever comes first.
//! Exiting then closes the connection with 1001 (see `run_app`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tauri::{AppHandle, Emitter};

/// How long the webview gets to hand over its last edits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

static QUITTING: AtomicBool = AtomicBool::new(false);

/// A window asked to close. Returns true when the close must wait for the webview's flush.
pub fn requested(app: &AppHandle) -> bool {
    if QUITTING.swap(true, Ordering::AcqRel) {
        return false; // second request, or the flush finished: let it close
    }
    let _ = app.emit("quit-requested", ());
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        tokio::time::sleep(FLUSH_TIMEOUT).await;
        tracing::warn!("the webview did not confirm its flush in time; quitting anyway");
        app.exit(0);
    });
    true
}

/// The webview flushed: exit.
pub fn ready(app: &AppHandle) {
    app.exit(0);
}
