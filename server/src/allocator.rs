//! The allocator's settings for `serve`. glibc's malloc raises its thresholds for returning
//! memory to the system each time a large block is freed (up to 32 MiB), so after a burst
//! (slow readers closed, a large document unloaded) it keeps the freed memory in its heap for
//! good. Fixed thresholds keep large blocks in their own mappings, unmapped when freed, and
//! trim the heap's top once 4 MiB is free there: the server's RSS then follows what it holds
//! (docs/RELIABILITY.md, the memory budget rows). Trimming at 128 KiB kept the same peak and
//! the same RSS after a burst, but gave pages back only to fault them in again: 19,300 page
//! faults on the B4 trace against 11,300 (docs/BENCHMARKS.md, F0). glibc reads these settings
//! only when a process starts, so `serve` starts itself once more with them, unless the
//! operator set `GLIBC_TUNABLES` already.

use std::os::unix::process::CommandExt;

const TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=4194304";

/// Replaces the process with itself, same arguments, with the allocator settings above; if
/// that fails, or the settings (or an operator's own) are in place, returns and the server
/// carries on as it is.
pub fn restart_with_settings() {
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", TUNABLES)
        .exec();
    eprintln!("could not restart with the allocator settings ({err}); going on without them");
}
