//! The commands the webview invokes: thin wrappers over [`Session`]. Errors reach the UI as
//! messages it shows as they are.

use tauri::{AppHandle, Manager, State};

use crate::dto::ConnectionDto;
use crate::session::{base64_encode, Session};
use crate::settings::Settings;

type Result<T> = std::result::Result<T, String>;

#[tauri::command]
pub async fn get_settings(session: State<'_, Session>) -> Result<Option<Settings>> {
    Ok(session.settings().await)
}

#[tauri::command]
pub async fn save_settings(
    app: AppHandle,
    session: State<'_, Session>,
    settings: Settings,
) -> Result<()> {
    settings.validate().map_err(|e| e.to_string())?;
    settings
        .save(&session.config_dir)
        .map_err(|e| e.to_string())?;
    session
        .apply_settings(&app, settings)
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn trust_fingerprint(session: State<'_, Session>, fingerprint: String) -> Result<()> {
    if let Some(settings) = session.trust(fingerprint).await {
        settings
            .save(&session.config_dir)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tauri::command]
pub async fn connection_state(session: State<'_, Session>) -> Result<ConnectionDto> {
    Ok(session.connection().await)
}

#[tauri::command]
pub async fn open_document(
    app: AppHandle,
    session: State<'_, Session>,
    doc: String,
) -> Result<String> {
    let state = session.open(&app, &doc).await.map_err(|e| e.to_string())?;
    Ok(base64_encode(&state))
}

#[tauri::command]
pub async fn close_document(session: State<'_, Session>, doc: String) -> Result<()> {
    session.close(&doc).await;
    Ok(())
}

#[tauri::command]
pub async fn push_update(session: State<'_, Session>, doc: String, update: String) -> Result<()> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(update)
        .map_err(|e| e.to_string())?;
    session
        .push_update(&doc, &bytes)
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn set_awareness(
    session: State<'_, Session>,
    doc: String,
    state: Option<String>,
) -> Result<()> {
    session
        .set_awareness(&doc, state)
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub fn set_title(app: AppHandle, title: String) -> Result<()> {
    if let Some(window) = app.get_webview_window("main") {
        window.set_title(&title).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The webview has handed over every local edit after `quit-requested`: quit now.
#[tauri::command]
pub fn ready_to_quit(app: AppHandle) {
    crate::quit::ready(&app);
}

/// Quit as File → Quit does: flush the webview's edits, then exit closing with 1001.
#[tauri::command]
pub fn request_quit(app: AppHandle) {
    if !crate::quit::requested(&app) {
        app.exit(0);
    }
}
