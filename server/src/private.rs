//! Owner-only files and directories. The data directory holds the token secret, the TLS key
//! and every document, so it is made `0700` and every file the server or the command line
//! writes there (and a backup or export written anywhere) is `0600`, whatever the umask: modes
//! are set explicitly after creation, not left to the process's umask.
//!
//! SQLite creates the database's `-wal` and `-shm` files itself, with the database file's
//! permissions (its unix VFS copies them and `fchmod`s the new file). So the database is
//! created here, empty and `0600`, before SQLite opens it, and an existing one is narrowed
//! to `0600`.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file written in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) owner-only; an existing directory is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// The group and other permission bits of `path` (0 when owner-only).
pub fn open_bits(path: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o077)
}

/// Creates a new file, owner read-write only; fails if it exists.
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Narrows an existing `path` with group or other bits to owner-only; a missing file is fine.
pub fn narrow(path: &Path) -> io::Result<()> {
    match open_bits(path) {
        Ok(0) => Ok(()),
        Ok(_) => std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Creates `path` empty and owner-only if it is missing, else [`narrow`]s it.
pub fn create_or_narrow(path: &Path) -> io::Result<()> {
    match create_file(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => narrow(path),
        Err(err) => Err(err),
    }
}

/// Opens a lock file, creating it owner-only if it is missing.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    create_or_narrow(path)?;
    OpenOptions::new().read(true).write(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_directories_are_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("f");
        create_file(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        assert!(
            create_file(&file).is_err(),
            "an existing file is not replaced"
        );

        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(open_bits(&file).unwrap(), 0o044);
        create_or_narrow(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        narrow(&dir.join("missing")).unwrap();
        assert!(!dir.join("missing").exists());
    }
}
