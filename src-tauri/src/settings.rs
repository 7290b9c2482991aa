//! The user's settings, kept as JSON in the app's configuration directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const SETTINGS_FILE: &str = "settings.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub server_url: String,
    pub token: String,
    pub local_only: bool,
    pub display_name: String,
    pub color: String,
    /// SHA-256 fingerprint of a server certificate the user chose to trust (a `--dev` server).
    pub trusted_fingerprint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the server URL must start with wss:// (or ws:// behind a TLS proxy)")]
    BadUrl,
    #[error("a token is needed unless the app is local only")]
    NoToken,
    #[error("saving settings: {0}")]
    Io(#[from] std::io::Error),
    #[error("settings file is not valid: {0}")]
    Json(#[from] serde_json::Error),
}

impl Settings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.local_only {
            return Ok(());
        }
        let url = self.server_url.trim();
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or(SettingsError::BadUrl)?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(SettingsError::BadUrl);
        }
        if self.token.trim().is_empty() {
            return Err(SettingsError::NoToken);
        }
        Ok(())
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(SETTINGS_FILE)
    }

    /// Reads the settings; `None` on first run.
    pub fn load(dir: &Path) -> Result<Option<Self>, SettingsError> {
        match std::fs::read_to_string(Self::path(dir)) {
            Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<(), SettingsError> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{SETTINGS_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, Self::path(dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, token: &str, local_only: bool) -> Settings {
        Settings {
            server_url: url.into(),
            token: token.into(),
            local_only,
            display_name: "Me".into(),
            color: "#000000".into(),
            trusted_fingerprint: None,
        }
    }

    #[test]
    fn validation() {
        assert!(settings("wss://localhost:7700/ws", "t", false)
            .validate()
            .is_ok());
        assert!(matches!(
            settings("https://x", "t", false).validate(),
            Err(SettingsError::BadUrl)
        ));
        assert!(matches!(
            settings("wss://", "t", false).validate(),
            Err(SettingsError::BadUrl)
        ));
        assert!(matches!(
            settings("wss://h/ws", "", false).validate(),
            Err(SettingsError::NoToken)
        ));
        assert!(settings("", "", true).validate().is_ok());
    }

    #[test]
    fn save_and_load() {
        let dir = std::env::temp_dir().join(format!("quire-settings-{}", std::process::id()));
        let s = settings("wss://h/ws", "t", false);
        assert!(Settings::load(&dir).unwrap().is_none());
        s.save(&dir).unwrap();
        assert_eq!(Settings::load(&dir).unwrap(), Some(s));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
