//! The native menu. Items the webview handles are forwarded to it as `menu` events.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::{AppHandle, Emitter, Runtime};

/// Menu item IDs, as the webview knows them.
const FORWARDED: [&str; 9] = [
    "new",
    "close-tab",
    "next-tab",
    "previous-tab",
    "settings",
    "export",
    "import",
    "history",
    "trash",
];

pub fn build<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<Menu<R>> {
    let file = Submenu::with_items(
        app,
        "File",
        true,
        &[
            &MenuItem::with_id(app, "new", "New Document", true, Some("CmdOrCtrl+N"))?,
            &MenuItem::with_id(app, "close-tab", "Close Tab", true, Some("CmdOrCtrl+W"))?,
            &PredefinedMenuItem::separator(app)?,
            // Their shortcuts (Ctrl+O, Ctrl+Shift+E) are the webview's: an accelerator here as
            // well would run them twice.
            &MenuItem::with_id(
                app,
                "import",
                "Import Markdown…  (Ctrl+O)",
                true,
                None::<&str>,
            )?,
            &MenuItem::with_id(
                app,
                "export",
                "Export as Markdown…  (Ctrl+Shift+E)",
                true,
                None::<&str>,
            )?,
            &PredefinedMenuItem::separator(app)?,
            &MenuItem::with_id(app, "settings", "Settings…", true, Some("CmdOrCtrl+,"))?,
            &PredefinedMenuItem::separator(app)?,
            // Our own item, not the predefined one: it must flush the webview's last edits
            // first (see `quit`), and the predefined one does nothing on Linux.
            &MenuItem::with_id(app, "quit", "Quit", true, Some("CmdOrCtrl+Q"))?,
        ],
    )?;
    let edit = Submenu::with_items(
        app,
        "Edit",
        true,
        &[
            &PredefinedMenuItem::cut(app, None)?,
            &PredefinedMenuItem::copy(app, None)?,
            &PredefinedMenuItem::paste(app, None)?,
            &PredefinedMenuItem::select_all(app, None)?,
        ],
    )?;
    let view = Submenu::with_items(
        app,
        "View",
        true,
        &[
            &MenuItem::with_id(
                app,
                "next-tab",
                "Next Tab",
                true,
                Some("CmdOrCtrl+PageDown"),
            )?,
            &MenuItem::with_id(
                app,
                "previous-tab",
                "Previous Tab",
                true,
                Some("CmdOrCtrl+PageUp"),
            )?,
            &PredefinedMenuItem::separator(app)?,
            &MenuItem::with_id(
                app,
                "history",
                "History  (Ctrl+Shift+H)",
                true,
                None::<&str>,
            )?,
            &MenuItem::with_id(app, "trash", "Trash", true, None::<&str>)?,
        ],
    )?;
    Menu::with_items(app, &[&file, &edit, &view])
}

/// Forwards a chosen menu item to the webview.
pub fn on_event(app: &AppHandle, id: &str) {
    if id == "quit" {
        crate::commands::request_quit(app.clone());
        return;
    }
    if FORWARDED.contains(&id) {
        let _ = app.emit("menu", id.to_owned());
    }
}
