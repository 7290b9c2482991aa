//! Markdown files: export the open document through the native save dialog, import files
//! chosen in the native open dialog or dropped on the window.
//!
//! `QUIRE_DESKTOP_DIALOG_DIR` answers both dialogs without showing them, for automated tests
//! (a WebDriver session cannot reach a native dialog): a save goes into that directory under
//! the suggested name, an open picks every Markdown file there.

use std::path::{Path, PathBuf};

use tauri::AppHandle;
use tauri_plugin_dialog::DialogExt;

use crate::dto::ImportedFile;

/// The largest file imported: far more text than anyone writes by hand, and small enough to
/// hand through IPC at once.
const MAX_IMPORT_BYTES: u64 = 16 * 1024 * 1024;
/// Extensions offered and accepted for import.
const MARKDOWN: [&str; 3] = ["md", "markdown", "txt"];

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is larger than 16 MiB")]
    TooLarge(String),
    #[error("{0} is not UTF-8 text")]
    NotText(String),
    #[error("{0} is not a Markdown or text file")]
    NotMarkdown(String),
}

fn dialog_dir() -> Option<PathBuf> {
    std::env::var_os("QUIRE_DESKTOP_DIALOG_DIR").map(PathBuf::from)
}

/// Asks where to save `suggested` (a file name); `None` if the user cancelled.
pub fn ask_save_path(app: &AppHandle, suggested: &str) -> Option<PathBuf> {
    if let Some(dir) = dialog_dir() {
        return Some(dir.join(suggested));
    }
    app.dialog()
        .file()
        .set_title("Export as Markdown")
        .set_file_name(suggested)
        .add_filter("Markdown", &["md"])
        .blocking_save_file()
        .and_then(|path| path.into_path().ok())
}

/// Asks which files to import; empty if the user cancelled.
pub fn ask_open_paths(app: &AppHandle) -> Vec<PathBuf> {
    if let Some(dir) = dialog_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| is_markdown(path))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        return found;
    }
    app.dialog()
        .file()
        .set_title("Import Markdown")
        .add_filter("Markdown", &MARKDOWN)
        .blocking_pick_files()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|path| path.into_path().ok())
        .collect()
}

/// Writes `text` to `path`.
pub fn write_markdown(path: &Path, text: &str) -> Result<(), FileError> {
    std::fs::write(path, text).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads Markdown files for import, each checked for size, extension and UTF-8.
pub fn read_markdown(paths: &[PathBuf]) -> Result<Vec<ImportedFile>, FileError> {
    paths.iter().map(|path| read_one(path)).collect()
}

fn read_one(path: &Path) -> Result<ImportedFile, FileError> {
    let shown = path.display().to_string();
    if !is_markdown(path) {
        return Err(FileError::NotMarkdown(shown));
    }
    let io = |source| FileError::Io {
        path: shown.clone(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.len() > MAX_IMPORT_BYTES {
        return Err(FileError::TooLarge(shown));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|_| FileError::NotText(shown.clone()))?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Imported".to_owned());
    Ok(ImportedFile { name, text })
}

fn is_markdown(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| MARKDOWN.contains(&ext.to_ascii_lowercase().as_str()))
}

/// A file name for a document titled `title`: the title without characters file systems
/// refuse, and `.md`.
pub fn file_name_for(title: &str) -> String {
    let cleaned: String = title
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '-',
            c if c.is_control() => '-',
            c => c,
        })
        .collect();
    let cleaned = cleaned.trim().trim_matches('.');
    let stem = if cleaned.is_empty() {
        "Untitled"
    } else {
        cleaned
    };
    format!("{stem}.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name_for("Plan: Q3/Q4"), "Plan- Q3-Q4.md");
        assert_eq!(file_name_for("  ..  "), "Untitled.md");
    }

    #[test]
    fn only_utf8_markdown_is_imported() {
        let dir = std::env::temp_dir().join(format!("quire-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("Notes.md");
        std::fs::write(&good, "# Notes\n").unwrap();
        let binary = dir.join("blob.md");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        let other = dir.join("image.png");
        std::fs::write(&other, "x").unwrap();
        let read = read_markdown(std::slice::from_ref(&good)).unwrap();
        assert_eq!(
            (read[0].name.as_str(), read[0].text.as_str()),
            ("Notes", "# Notes\n")
        );
        assert!(matches!(
            read_markdown(&[binary]),
            Err(FileError::NotText(_))
        ));
        assert!(matches!(
            read_markdown(&[other]),
            Err(FileError::NotMarkdown(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
