//! CPU time and memory of a process from /proc (Linux only).

use std::time::Duration;

/// Clock ticks per second for /proc/<pid>/stat times; 100 on every Linux this runs on.
const CLK_TCK: f64 = 100.0;

/// User + system CPU time of `pid` ("self" for this process).
pub(crate) fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / CLK_TCK))
}

/// `(VmRSS, VmHWM)` of `pid` in KiB: resident now and peak resident.
pub(crate) fn rss_kib(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        status_kib(&status, "VmRSS:")?,
        status_kib(&status, "VmHWM:")?,
    ))
}

/// `RssAnon` of `pid` in KiB: the resident memory that is the process's own data (heap,
/// stacks), without the pages of its binary and libraries. Code runs for the first time
/// during a scenario and its pages then count in VmRSS once per process, not per client.
pub(crate) fn anon_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "RssAnon:")
}

fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
}
