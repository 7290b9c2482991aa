//! One memory budget for the whole server. What clients can make the server hold counts
//! against it, by use: frames queued for sending (a relayed body shared by many queues counts
//! once, for as long as any queue holds it), unfinished fragmented messages, whole messages
//! waiting for their document's work, awareness states and loaded documents. Each holder keeps a [`Charge`] that it resizes as it grows and
//! shrinks, and that gives its bytes back when dropped.
//!
//! When the total passes its mark, 15/16 of the limit, [`MemoryBudget::enforce`] (a task of its
//! own, woken by the charge that crossed it) first unloads documents nobody has open, then
//! closes the connections holding the most until the total is back under the mark: 4009 for
//! one holding queued output, 1008 for one holding unfinished messages (PROTOCOL §9). The
//! sixteenth between the mark and the limit is room for the work of good clients while the
//! holders are closed. Once the total is past the limit itself,
//! new work is refused ([`MemoryBudget::is_over`]): upgrades get 503, opening a document that
//! is not loaded and writing get the channel code 4503, so that the process does not grow.
//! Queued output includes the batch a connection's writer is writing (at most 64 KiB), three
//! times while the socket has not taken it: ours, the WebSocket layer's and TLS's copies.
//!
//! The charges cannot see everything the process holds: the runtime and SQLite's caches, the
//! WebSocket layer's and TLS's copies of each blocked writer's batch, memory freed but kept by
//! the allocator ([`crate::allocator`] sets glibc up to return most of it), the socket
//! buffers of connections not yet upgraded. So the enforcer also reads the process's resident
//! size (`VmRSS`) every few tens of milliseconds, and once it passes the mark it closes the
//! largest holders just the same. New work is refused on the charges alone: a resident size
//! that stays high with nothing left to close (memory the allocator keeps) must not lock
//! everyone out.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use quire_protocol::CloseCode;
use tokio::sync::Notify;

/// What a charge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Bodies queued for sending to clients.
    Output,
    /// Unfinished fragmented messages being reassembled.
    Unfinished,
    /// Whole messages received and waiting for (or in) their document's work.
    Incoming,
    /// Awareness (presence) states held by documents.
    Awareness,
    /// Loaded documents: the CRDT state and the history it was built from.
    Documents,
}

const USES: [(Use, &str); 5] = [
    (Use::Output, "output"),
    (Use::Unfinished, "unfinished"),
    (Use::Incoming, "incoming"),
    (Use::Awareness, "awareness"),
    (Use::Documents, "documents"),
];

/// A connection holding less than this is never closed for the budget: it is not what fills
/// it, and closing it would give back next to nothing.
const EVICTABLE_BYTES: u64 = 1024 * 1024;

/// After a pass that could not get under the limit (documents in use fill it), the next
/// pass waits at least this long, so that a stream of charges does not keep it spinning.
const RETRY_PASS_AFTER: Duration = Duration::from_millis(100);

/// How often the enforcer reads the resident size: often once it is past half the limit,
/// seldom while far below it (an idle server need not wake up much).
const READ_RESIDENT_NEAR: Duration = Duration::from_millis(25);
const READ_RESIDENT_FAR: Duration = Duration::from_millis(250);

/// What one connection holds, for choosing whom to close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holding {
    /// Bytes in its outgoing queue (shared bodies counted in full for each queue holding them).
    pub output: u64,
    /// Bytes of its unfinished fragmented messages.
    pub unfinished: u64,
}

impl Holding {
    fn total(self) -> u64 {
        self.output + self.unfinished
    }

    /// The close code for a connection closed for holding this (PROTOCOL §9, §10.1).
    fn close_code(self) -> CloseCode {
        if self.unfinished > self.output {
            CloseCode::PolicyViolation
        } else {
            CloseCode::SlowConsumer
        }
    }
}

/// A connection, as the budget sees it.
pub trait Holder: Send + Sync {
    fn holding(&self) -> Holding;
    /// Closes the connection with `code`, dropping its queue; false if it was already closing.
    fn evict(&self, code: CloseCode) -> bool;
}

/// Documents nobody has open, which the budget may ask to unload.
pub trait Unloader: Send + Sync {
    /// Unloads every loaded document that no channel holds (once its writes are durable).
    fn unload_unused(&self);
}

#[derive(Debug, Default)]
struct Counters {
    evictions: AtomicU64,
    refusals: AtomicU64,
}

pub struct MemoryBudget {
    limit: u64,
    used: [AtomicU64; 5],
    over: Notify,
    holders: Mutex<HashMap<u64, Weak<dyn Holder>>>,
    next_holder: AtomicU64,
    counters: Counters,
    /// The process's resident size at the enforcer's last reading (0 before the first, or
    /// where /proc cannot be read).
    resident: AtomicU64,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: Default::default(),
            over: Notify::new(),
            holders: Mutex::new(HashMap::new()),
            next_holder: AtomicU64::new(1),
            counters: Counters::default(),
            resident: AtomicU64::new(0),
        })
    }

    /// A budget that is never reached (benchmarks and tests of other parts).
    pub fn unlimited() -> Arc<Self> {
        Self::new(u64::MAX)
    }

    /// The default for a machine: half of its memory, or of the cgroup's limit if lower.
    pub fn default_limit() -> u64 {
        let total = machine_memory().unwrap_or(4 << 30);
        let cgroup = cgroup_limit().unwrap_or(u64::MAX);
        total.min(cgroup) / 2
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged in all.
    pub fn used(&self) -> u64 {
        self.used.iter().map(|u| u.load(Relaxed)).sum()
    }

    pub fn used_by(&self, what: Use) -> u64 {
        self.used[what as usize].load(Relaxed)
    }

    /// Whether the total is past the limit: new work is refused meanwhile.
    pub fn is_over(&self) -> bool {
        self.used() > self.limit
    }

    /// The total, or resident size, past which the largest holders are closed: 15/16 of the
    /// limit.
    pub fn mark(&self) -> u64 {
        self.limit - self.limit / 16
    }

    fn past_mark(&self) -> bool {
        self.used() > self.mark()
    }

    /// Counts one piece of work refused because the budget was over.
    pub fn count_refusal(&self) {
        self.counters.refusals.fetch_add(1, Relaxed);
    }

    /// A charge of `bytes` for `what`, given back when dropped.
    pub fn charge(self: &Arc<Self>, what: Use, bytes: u64) -> Charge {
        let mut charge = Charge {
            budget: self.clone(),
            what,
            bytes: 0,
        };
        charge.set(bytes);
        charge
    }

    /// `body` as shared bytes charged as output until the last holder drops them.
    pub fn output_bytes(self: &Arc<Self>, body: Vec<u8>) -> Bytes {
        let charge = self.charge(Use::Output, body.len() as u64);
        Bytes::from_owner(ChargedBody {
            body,
            _charge: charge,
        })
    }

    /// Registers a connection; it stays known while it lives (a weak reference).
    pub fn register(&self, holder: Weak<dyn Holder>) -> u64 {
        let id = self.next_holder.fetch_add(1, Relaxed);
        self.holders.lock().insert(id, holder);
        id
    }

    pub fn unregister(&self, id: u64) {
        self.holders.lock().remove(&id);
    }

    fn add(&self, what: Use, bytes: u64) {
        self.used[what as usize].fetch_add(bytes, Relaxed);
        if self.past_mark() {
            self.over.notify_one();
        }
    }

    fn sub(&self, what: Use, bytes: u64) {
        self.used[what as usize].fetch_sub(bytes, Relaxed);
    }

    /// Keeps the total and the resident size under the mark, for as long as the server runs:
    /// see the module doc.
    pub async fn enforce(self: Arc<Self>, unloader: Arc<dyn Unloader>) {
        loop {
            let resident = self.resident.load(Relaxed);
            let next_reading = if resident > self.limit / 2 {
                READ_RESIDENT_NEAR
            } else {
                READ_RESIDENT_FAR
            };
            tokio::select! {
                _ = self.over.notified() => {}
                _ = tokio::time::sleep(next_reading) => {}
            }
            let resident = resident_bytes();
            self.resident.store(resident.unwrap_or(0), Relaxed);
            let resident_over = resident.is_some_and(|r| r > self.mark());
            if !self.past_mark() && !resident_over {
                continue;
            }
            unloader.unload_unused();
            let evicted = self.evict_largest(resident);
            if evicted > 0 {
                tracing::warn!(
                    evicted,
                    used = self.used(),
                    resident = resident.unwrap_or(0),
                    limit = self.limit,
                    "memory budget reached: closed the connections holding the most"
                );
            }
            // What was closed takes a moment to leave (queues drop at once, unfinished
            // messages when their connection's task sees the close, the allocator after
            // that): the next pass reads the resident size again after a pause, so that one
            // burst does not close more than it must, and a stream of charges past a limit
            // that documents in use fill does not keep this spinning.
            tokio::time::sleep(RETRY_PASS_AFTER).await;
        }
    }

    /// Closes connections, those holding the most first, until what is left would be under
    /// the mark, and so would the resident size (`resident`, if known) less what the closes
    /// freed. Unfinished messages are freed by the connection's own task once it sees
    /// the close, so they count as freed at once; queued output is dropped by the close
    /// itself (a body other queues share stays until the last of them drops it). Returns how
    /// many were closed.
    fn evict_largest(&self, resident: Option<u64>) -> usize {
        // Upgraded under the lock, looked at after it: a holder whose last reference is one
        // of these unregisters itself when dropped, which takes the lock.
        let live: Vec<Arc<dyn Holder>> = {
            let mut map = self.holders.lock();
            map.retain(|_, weak| weak.strong_count() > 0);
            map.values().filter_map(Weak::upgrade).collect()
        };
        let mut holders: Vec<(Holding, Arc<dyn Holder>)> = live
            .into_iter()
            .map(|holder| (holder.holding(), holder))
            .filter(|(holding, _)| holding.total() >= EVICTABLE_BYTES)
            .collect();
        holders.sort_by_key(|(holding, _)| std::cmp::Reverse(holding.total()));
        let used_before = self.used();
        let mut freeing = 0;
        let mut evicted = 0;
        for (holding, holder) in holders {
            let used = self.used().saturating_sub(freeing);
            let freed = used_before.saturating_sub(used);
            let resident_over = resident.is_some_and(|r| r.saturating_sub(freed) > self.mark());
            if used <= self.mark() && !resident_over {
                break;
            }
            if holder.evict(holding.close_code()) {
                freeing += holding.unfinished;
                evicted += 1;
                self.counters.evictions.fetch_add(1, Relaxed);
            }
        }
        evicted
    }

    /// The budget's figures in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP quire_memory_budget_bytes The server-wide memory budget.\n\
             # TYPE quire_memory_budget_bytes gauge\nquire_memory_budget_bytes {}",
            self.limit
        );
        let _ = writeln!(
            out,
            "# HELP quire_memory_used_bytes Bytes charged against the memory budget, by use.\n\
             # TYPE quire_memory_used_bytes gauge"
        );
        for (what, name) in USES {
            let _ = writeln!(
                out,
                "quire_memory_used_bytes{{use=\"{name}\"}} {}",
                self.used_by(what)
            );
        }
        let _ = writeln!(
            out,
            "# HELP quire_memory_resident_bytes The server's resident size at the budget's last reading.\n\
             # TYPE quire_memory_resident_bytes gauge\nquire_memory_resident_bytes {}",
            self.resident.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP quire_memory_evictions_total Connections closed because the memory budget was reached.\n\
             # TYPE quire_memory_evictions_total counter\nquire_memory_evictions_total {}",
            self.counters.evictions.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP quire_memory_refusals_total Upgrades, opens and writes refused while the memory budget was exceeded.\n\
             # TYPE quire_memory_refusals_total counter\nquire_memory_refusals_total {}",
            self.counters.refusals.load(Relaxed)
        );
    }
}

/// Bytes of one use, held against the budget until dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    what: Use,
    bytes: u64,
}

impl Charge {
    /// Resizes the charge to `bytes`.
    pub fn set(&mut self, bytes: u64) {
        match bytes.cmp(&self.bytes) {
            std::cmp::Ordering::Greater => self.budget.add(self.what, bytes - self.bytes),
            std::cmp::Ordering::Less => self.budget.sub(self.what, self.bytes - bytes),
            std::cmp::Ordering::Equal => {}
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sub(self.what, self.bytes);
    }
}

/// A body and its charge: dropped together when the last `Bytes` sharing it goes.
struct ChargedBody {
    body: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for ChargedBody {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// This process's resident size (VmRSS from /proc/self/status).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// MemTotal from /proc/meminfo.
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The cgroup v2 memory limit of this process, if it has one.
fn cgroup_limit() -> Option<u64> {
    let max = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    max.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU16;

    #[derive(Default)]
    struct FakeConnection {
        holding: Mutex<Holding>,
        closed_with: AtomicU16,
        /// Its queue's own bodies, dropped when it is closed.
        queue: Mutex<Option<Charge>>,
    }

    impl Holder for FakeConnection {
        fn holding(&self) -> Holding {
            *self.holding.lock()
        }
        fn evict(&self, code: CloseCode) -> bool {
            self.closed_with.store(code.as_u16(), Relaxed);
            *self.holding.lock() = Holding::default();
            self.queue.lock().take();
            true
        }
    }

    #[test]
    fn charges_add_up_by_use_and_are_given_back_when_dropped() {
        let budget = MemoryBudget::new(1000);
        let mut a = budget.charge(Use::Documents, 300);
        let b = budget.charge(Use::Awareness, 200);
        assert_eq!(budget.used(), 500);
        a.set(100);
        assert_eq!(budget.used_by(Use::Documents), 100);
        drop(b);
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_shared_body_counts_once_until_its_last_holder_drops_it() {
        let budget = MemoryBudget::new(1000);
        let body = budget.output_bytes(vec![0; 400]);
        let copies: Vec<Bytes> = (0..50).map(|_| body.clone()).collect();
        assert_eq!(budget.used_by(Use::Output), 400);
        drop(body);
        assert_eq!(budget.used_by(Use::Output), 400);
        drop(copies);
        assert_eq!(budget.used_by(Use::Output), 0);
    }

    #[test]
    fn the_largest_holders_are_closed_until_under_the_limit_with_their_codes() {
        let mib = 1024 * 1024;
        let budget = MemoryBudget::new(10 * mib);
        let connections: Vec<Arc<FakeConnection>> = [
            (6, 0), // a slow reader
            (0, 5), // unfinished messages
            (2, 0),
            (0, 0), // a good client holding nothing
        ]
        .into_iter()
        .map(|(output, unfinished)| {
            Arc::new(FakeConnection {
                holding: Mutex::new(Holding {
                    output: output * mib,
                    unfinished: unfinished * mib,
                }),
                ..Default::default()
            })
        })
        .collect();
        for c in &connections {
            let weak: Weak<dyn Holder> = Arc::downgrade(&(c.clone() as Arc<dyn Holder>));
            budget.register(weak);
        }
        // What they hold is charged: 13 MiB against 10. The queued output here is shared with
        // queues that stay (closing its holder frees none of it); unfinished bytes count as
        // freed once their holder is closed.
        let _output = budget.charge(Use::Output, 8 * mib);
        let _unfinished = budget.charge(Use::Unfinished, 5 * mib);
        let closed = budget.evict_largest(None);
        let codes: Vec<u16> = connections
            .iter()
            .map(|c| c.closed_with.load(Relaxed))
            .collect();
        // The slow reader (largest) first, 4009; still over, so the unfinished holder, 1008;
        // that brings the total to 8 MiB: the rest stay.
        assert_eq!(closed, 2);
        assert_eq!(codes, [4009, 1008, 0, 0]);
    }

    #[test]
    fn a_resident_size_past_its_mark_closes_the_largest_holders_too() {
        let mib = 1024 * 1024;
        // 16 MiB: the resident mark is at 15 MiB.
        let budget = MemoryBudget::new(16 * mib);
        let connections: Vec<Arc<FakeConnection>> = [3, 2, 1]
            .into_iter()
            .map(|output| {
                Arc::new(FakeConnection {
                    holding: Mutex::new(Holding {
                        output: output * mib,
                        unfinished: 0,
                    }),
                    queue: Mutex::new(Some(budget.charge(Use::Output, output * mib))),
                    ..Default::default()
                })
            })
            .collect();
        for c in &connections {
            let weak: Weak<dyn Holder> = Arc::downgrade(&(c.clone() as Arc<dyn Holder>));
            budget.register(weak);
        }
        // 6 MiB charged: well under the limit, so new work is not refused.
        assert!(!budget.is_over());
        assert_eq!(budget.evict_largest(Some(15 * mib)), 0, "at the mark");
        // 17 MiB resident: closing the largest (3 MiB leave) brings it to 14 MiB.
        assert_eq!(budget.evict_largest(Some(17 * mib)), 1);
        let codes: Vec<u16> = connections
            .iter()
            .map(|c| c.closed_with.load(Relaxed))
            .collect();
        assert_eq!(codes, [4009, 0, 0]);
        assert_eq!(budget.used(), 3 * mib);
    }

    #[test]
    fn small_holders_are_never_closed() {
        let budget = MemoryBudget::new(1);
        let connection = Arc::new(FakeConnection {
            holding: Mutex::new(Holding {
                output: 1000,
                unfinished: 0,
            }),
            ..Default::default()
        });
        let weak: Weak<dyn Holder> = Arc::downgrade(&(connection.clone() as Arc<dyn Holder>));
        budget.register(weak);
        let _documents = budget.charge(Use::Documents, 10);
        assert_eq!(budget.evict_largest(None), 0);
        assert_eq!(connection.closed_with.load(Relaxed), 0);
    }
}
