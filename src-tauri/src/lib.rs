//! `quire-desktop`: the Tauri 2 app. The webview holds a Yjs replica of each open document,
//! bound to CodeMirror; the Rust side holds the yrs replica, the local store and the one
//! connection (quire-client). Edits cross Tauri IPC as Yjs v1 updates, both ways.
//!
//! # Layout
//! - [`run`] / [`run_app`]: builds the app (state, menu, commands) and runs it; on exit the
//!   connection closes with 1001 after local data is flushed.
//! - [`session`]: settings → client, open documents, forwarding to the webview.
//! - [`commands`]: the IPC commands, thin.
//! - [`history`]: versions and the trash, asked of the server.
//! - [`files`]: Markdown export and import through native dialogs, and dropped files.
//! - [`settings`]: the settings file.
//! - [`dto`]: what the webview receives.
//! - [`menu`]: the native menu.
//! - [`quit`]: quitting without losing the last keystrokes.
//!
//! Directories: `QUIRE_DESKTOP_CONFIG_DIR` and `QUIRE_DESKTOP_DATA_DIR` override the app's
//! configuration and data directories (tests run the app in temporary ones).

pub mod commands;
pub mod dto;
pub mod files;
pub mod history;
pub mod menu;
pub mod quit;
pub mod session;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use quire_client::SqliteLocalStore;
use tauri::{Manager, RunEvent, WindowEvent};

use crate::session::Session;
use crate::settings::Settings;

/// Runs the app with the default builder.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    run_app(tauri::Builder::default());
}

fn dir(var: &str, default: tauri::Result<PathBuf>) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.expect("the platform has an app directory"))
}

/// Runs the app on `builder` (tests may pass a prepared one).
pub fn run_app(builder: tauri::Builder<tauri::Wry>) {
    let app = builder
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            let config_dir = dir("QUIRE_DESKTOP_CONFIG_DIR", app.path().app_config_dir());
            let data_dir = dir("QUIRE_DESKTOP_DATA_DIR", app.path().app_data_dir());
            std::fs::create_dir_all(&data_dir)?;
            let settings = Settings::load(&config_dir).unwrap_or_else(|err| {
                tracing::warn!(error = %err, "settings unreadable; starting with the settings view");
                None
            });
            let handle = app.handle().clone();
            let session = tauri::async_runtime::block_on(async move {
                let store = Arc::new(SqliteLocalStore::open(&data_dir.join("local.db")).await?);
                let session = Session::new(config_dir, store, settings.clone());
                if let Some(settings) = settings {
                    session.apply_settings(&handle, settings).await?;
                }
                Ok::<_, Box<dyn std::error::Error>>(session)
            })?;
            app.manage(session);
            let menu = menu::build(app.handle())?;
            app.set_menu(menu)?;
            app.on_menu_event(|app, event| menu::on_event(app, event.id().as_ref()));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::get_settings,
            commands::save_settings,
            commands::trust_fingerprint,
            commands::connection_state,
            commands::open_document,
            commands::close_document,
            commands::push_update,
            commands::set_awareness,
            commands::set_title,
            commands::ready_to_quit,
            commands::request_quit,
            commands::list_versions,
            commands::create_version,
            commands::version_text,
            commands::restore_version,
            commands::trash_document,
            commands::untrash_document,
            commands::list_trash,
            commands::purge_document,
            commands::export_markdown,
            commands::import_markdown,
            commands::read_markdown_files,
        ])
        .build(tauri::generate_context!())
        .expect("building the Quire app");
    app.run(|app, event| {
        if let RunEvent::WindowEvent {
            event: WindowEvent::CloseRequested { api, .. },
            ..
        } = &event
        {
            if quit::requested(app) {
                api.prevent_close();
            }
        }
        if let RunEvent::Exit = event {
            // Local edits are stored as they happen; say goodbye with 1001 so the server
            // knows this is a planned ending.
            if let Some(session) = app.try_state::<Session>() {
                tauri::async_runtime::block_on(session.shutdown());
            }
        }
    });
}
