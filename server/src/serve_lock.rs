//! The data directory's serve lock: `serve` holds an exclusive lock on `serve.lock` for as
//! long as it runs, so that the command-line operations a running server would not see (a
//! restore, moving a document to the trash) can refuse instead of racing it. The lock is the
//! kernel's (`flock`): it goes with the process, however the process ends.

use std::fs::File;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// Held while a server serves the data directory.
#[derive(Debug)]
pub struct ServeLock(#[allow(dead_code)] File);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("a server is serving this data directory")]
    Held,
    #[error("opening {LOCK_FILE}: {0}")]
    Io(#[from] std::io::Error),
}

/// Takes the lock, without waiting.
pub fn try_lock(data_dir: &Path) -> Result<ServeLock, LockError> {
    let file = crate::private::open_lock_file(&data_dir.join(LOCK_FILE))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(ServeLock(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Held),
        Err(err) => Err(LockError::Io(err.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_lock(dir.path()).unwrap();
        assert!(matches!(try_lock(dir.path()), Err(LockError::Held)));
        drop(held);
        try_lock(dir.path()).unwrap();
    }
}
