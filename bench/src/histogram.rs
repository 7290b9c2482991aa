//! A small log-linear latency histogram (HdrHistogram-like, ~1.6% relative precision): values
//! in microseconds, 64 linear sub-buckets per power of two, so recording is O(1) and memory is
//! fixed (~2,000 counters) whatever the count.

/// Sub-buckets per power of two; the relative error of a reported value is below 1/64.
const SUB_BUCKETS: u64 = 64;
const SUB_BITS: u32 = 6;
/// Buckets cover values below 2^(MAX_EXP + SUB_BITS) µs (~800 days); larger ones are clamped.
const MAX_EXP: u32 = 40;

#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; ((MAX_EXP + 1) as u64 * SUB_BUCKETS) as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let shift = 63 - value.leading_zeros() - SUB_BITS;
        let sub = (value >> shift) - SUB_BUCKETS;
        ((shift as u64 + 1) * SUB_BUCKETS + sub) as usize
    }

    /// The highest value that lands in bucket `index` (what percentiles report).
    fn upper_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let shift = index / SUB_BUCKETS - 1;
        let sub = index % SUB_BUCKETS + SUB_BUCKETS;
        ((sub + 1) << shift) - 1
    }

    pub(crate) fn record(&mut self, value_us: u64) {
        let index = Self::index(value_us).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value_us);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0–1.0): the smallest bucket bound with at least `q` of
    /// the recorded values at or below it; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper_bound(index).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 0..64 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 31);
        assert_eq!(h.quantile(1.0), 63);
        assert_eq!(h.count(), 64);
    }

    #[test]
    fn percentiles_are_within_the_relative_precision() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, exact) in [
            (0.5, 50_000.0),
            (0.9, 90_000.0),
            (0.99, 99_000.0),
            (0.999, 99_900.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact < 1.0 / 32.0,
                "q={q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.max(), 100_000);
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            65_535,
            1 << 30,
            u64::MAX >> 20,
        ] {
            let i = Histogram::index(v);
            assert!(i >= last);
            assert!(Histogram::upper_bound(i) >= v, "{v}");
            last = i;
        }
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(1_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max(), 1_000);
        assert_eq!(a.quantile(0.5), 10);
    }
}
