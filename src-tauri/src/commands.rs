//! The commands the webview invokes: thin wrappers over [`Session`]. Errors reach the UI as
//! messages it shows as they are.

use tauri::{AppHandle, Manager, State};

use crate::dto::{ConnectionDto, ImportedFile, TrashDto, VersionDto};
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

#[tauri::command]
pub async fn list_versions(session: State<'_, Session>, doc: String) -> Result<Vec<VersionDto>> {
    session.list_versions(&doc).await.map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn create_version(
    session: State<'_, Session>,
    doc: String,
    name: String,
) -> Result<VersionDto> {
    session
        .create_version(&doc, &name)
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn version_text(
    session: State<'_, Session>,
    doc: String,
    version: u64,
) -> Result<String> {
    session
        .version_text(&doc, version)
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn restore_version(
    session: State<'_, Session>,
    doc: String,
    version: u64,
) -> Result<VersionDto> {
    session
        .restore_version(&doc, version)
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn trash_document(session: State<'_, Session>, doc: String) -> Result<()> {
    session.trash(&doc).await.map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn untrash_document(session: State<'_, Session>, doc: String) -> Result<()> {
    session.untrash(&doc).await.map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn list_trash(session: State<'_, Session>) -> Result<Vec<TrashDto>> {
    session.list_trash().await.map_err(|e| e.to_string())
}

#[tauri::command]
pub async fn purge_document(session: State<'_, Session>, doc: String) -> Result<()> {
    session.purge(&doc).await.map_err(|e| e.to_string())
}

/// Exports an open document to a Markdown file the user picks; the path written, or `None`
/// if the user cancelled.
#[tauri::command]
pub async fn export_markdown(
    app: AppHandle,
    session: State<'_, Session>,
    doc: String,
    title: String,
) -> Result<Option<String>> {
    let text = session.text(&doc).await.map_err(|e| e.to_string())?;
    let suggested = crate::files::file_name_for(&title);
    let Some(path) = crate::files::ask_save_path(&app, &suggested) else {
        return Ok(None);
    };
    crate::files::write_markdown(&path, &text).map_err(|e| e.to_string())?;
    Ok(Some(path.display().to_string()))
}

/// Reads the Markdown files the user picks in the open dialog (none if cancelled).
#[tauri::command]
pub async fn import_markdown(app: AppHandle) -> Result<Vec<ImportedFile>> {
    let paths = crate::files::ask_open_paths(&app);
    crate::files::read_markdown(&paths).map_err(|e| e.to_string())
}

/// Reads Markdown files dropped on the window.
#[tauri::command]
pub async fn read_markdown_files(paths: Vec<String>) -> Result<Vec<ImportedFile>> {
    let paths: Vec<std::path::PathBuf> = paths.into_iter().map(Into::into).collect();
    crate::files::read_markdown(&paths).map_err(|e| e.to_string())
}
