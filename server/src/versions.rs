//! Version history policy: when a document gets an automatic version, and which versions go
//! when a document's versions pass their quota. Pure functions of times and sizes, so the
//! store applies them inside its own transaction and the tests need no clock.

use std::time::Duration;

use quire_protocol::request::VersionKind;

/// What the server keeps of a document's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// At most one automatic version per this much time while a document is edited; zero
    /// turns automatic versions off.
    pub auto_interval: Duration,
    /// Versions kept per document.
    pub max_count: u32,
    /// Bytes of version content kept per document.
    pub max_bytes: u64,
    /// How long a trashed document can be brought back.
    pub trash_retention: Duration,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self {
            auto_interval: Duration::from_secs(600),
            max_count: 100,
            max_bytes: 64 * 1024 * 1024,
            trash_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

impl HistoryPolicy {
    /// Whether a document edited now, whose newest version was saved at `newest_ms` (none
    /// yet: `None`), is due an automatic version.
    pub fn auto_due(&self, newest_ms: Option<u64>, now_ms: u64) -> bool {
        if self.auto_interval.is_zero() {
            return false;
        }
        newest_ms.is_none_or(|newest| {
            now_ms.saturating_sub(newest) >= self.auto_interval.as_millis() as u64
        })
    }

    /// Whether a named version of `size` bytes fits beside the named versions already kept
    /// (`named_count`, `named_bytes`): named versions are never thinned, so they alone must
    /// stay within the quota, with room for the newest automatic one.
    pub fn named_fits(&self, named_count: u32, named_bytes: u64, size: u64) -> bool {
        named_count + 1 < self.max_count && named_bytes + size <= self.max_bytes
    }
}

/// A kept version, as thinning sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub id: u64,
    pub created_ms: u64,
    pub kind: VersionKind,
    pub size: u64,
}

/// The versions to delete so that `versions` (any order) fit the policy's quota.
///
/// Named versions are never chosen. Of the others, the newest version of all is kept too (it
/// is the one a user most likely wants), and the oldest goes last (it is how far back the
/// history reaches). Then, one at a time, the version whose loss leaves
/// the smallest hole for its age goes: the span between its neighbours divided by its age.
/// Recent versions stay dense and old ones grow sparse, roughly logarithmically: after a long
/// history a document keeps versions an hour apart from yesterday, days apart from last month.
pub fn thin(versions: &[Kept], policy: &HistoryPolicy, now_ms: u64) -> Vec<u64> {
    let mut kept: Vec<Kept> = versions.to_vec();
    kept.sort_by_key(|v| (v.created_ms, v.id));
    let mut count = kept.len() as u64;
    let mut bytes: u64 = kept.iter().map(|v| v.size).sum();
    let mut gone = Vec::new();
    while count > u64::from(policy.max_count) || bytes > policy.max_bytes {
        let newest = kept.len().saturating_sub(1);
        let candidate = (0..newest)
            .filter(|&i| kept[i].kind != VersionKind::Named)
            .min_by(|&a, &b| {
                hole_for_age(&kept, a, now_ms).total_cmp(&hole_for_age(&kept, b, now_ms))
            });
        let Some(index) = candidate else { break };
        let removed = kept.remove(index);
        count -= 1;
        bytes -= removed.size;
        gone.push(removed.id);
    }
    gone
}

/// How much of the timeline losing version `i` leaves uncovered, relative to its age.
fn hole_for_age(kept: &[Kept], i: usize, now_ms: u64) -> f64 {
    // The oldest version is how far back the history reaches: it goes last.
    if i == 0 {
        return f64::INFINITY;
    }
    let at = kept[i].created_ms;
    let after = kept.get(i + 1).map_or(at, |v| v.created_ms);
    let hole = (after - kept[i - 1].created_ms) as f64;
    let age = now_ms.saturating_sub(at).max(1) as f64;
    hole / age
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    const DAY: u64 = 1440 * MINUTE;

    fn version(id: u64, created_ms: u64, kind: VersionKind) -> Kept {
        Kept {
            id,
            created_ms,
            kind,
            size: 1000,
        }
    }

    fn policy(max_count: u32) -> HistoryPolicy {
        HistoryPolicy {
            max_count,
            max_bytes: u64::MAX,
            ..HistoryPolicy::default()
        }
    }

    #[test]
    fn automatic_versions_come_once_per_interval() {
        let policy = HistoryPolicy::default();
        assert!(policy.auto_due(None, 0));
        assert!(!policy.auto_due(Some(1_000), 1_000 + 9 * MINUTE));
        assert!(policy.auto_due(Some(1_000), 1_000 + 10 * MINUTE));
        let off = HistoryPolicy {
            auto_interval: Duration::ZERO,
            ..policy
        };
        assert!(!off.auto_due(None, 0));
    }

    #[test]
    fn thinning_keeps_recent_versions_dense_and_old_ones_sparse() {
        // A version every 10 minutes for 30 days, kept to 50.
        let now = 30 * DAY;
        let versions: Vec<Kept> = (0..30 * 144)
            .map(|i| version(i, i * 10 * MINUTE, VersionKind::Auto))
            .collect();
        let gone = thin(&versions, &policy(50), now);
        let mut left: Vec<u64> = versions
            .iter()
            .filter(|v| !gone.contains(&v.id))
            .map(|v| v.created_ms)
            .collect();
        left.sort_unstable();
        assert_eq!(left.len(), 50);
        assert_eq!(
            *left.last().unwrap(),
            (30 * 144 - 1) * 10 * MINUTE,
            "newest kept"
        );
        let in_last_day = left.iter().filter(|&&t| t >= now - DAY).count();
        let in_first_week = left.iter().filter(|&&t| t < 7 * DAY).count();
        assert!(
            in_last_day > in_first_week,
            "last day {in_last_day}, first week {in_first_week}"
        );
        // The gaps grow with age: the oldest gap is many times the newest.
        let first_gap = left[1] - left[0];
        let last_gap = left[left.len() - 1] - left[left.len() - 2];
        assert!(first_gap >= 10 * last_gap, "{first_gap} vs {last_gap}");
    }

    #[test]
    fn named_versions_are_never_thinned() {
        let mut versions: Vec<Kept> = (0..10)
            .map(|i| version(i, i * MINUTE, VersionKind::Named))
            .collect();
        versions.extend((10..20).map(|i| version(i, i * MINUTE, VersionKind::Auto)));
        versions.push(version(20, 20 * MINUTE, VersionKind::BeforeRestore));
        let gone = thin(&versions, &policy(5), 21 * MINUTE);
        assert_eq!(gone.len(), 10, "every automatic version but the newest");
        assert!(gone.iter().all(|id| (10..20).contains(id)));
        assert!(!gone.contains(&20));
    }

    #[test]
    fn the_byte_quota_thins_too() {
        let versions: Vec<Kept> = (0..10)
            .map(|i| version(i, i * MINUTE, VersionKind::Auto))
            .collect();
        let by_bytes = HistoryPolicy {
            max_bytes: 4_500,
            ..policy(100)
        };
        assert_eq!(thin(&versions, &by_bytes, 10 * MINUTE).len(), 6);
        assert!(thin(&versions, &policy(100), 10 * MINUTE).is_empty());
    }

    #[test]
    fn named_versions_leave_room_for_the_newest() {
        let policy = policy(10);
        assert!(policy.named_fits(8, 0, 1));
        assert!(!policy.named_fits(9, 0, 1));
    }
}
