//! Lock-free counters kept where things happen and read by whatever
//! reports them (INFO, LATENCY, `/metrics`): call durations in
//! power-of-two buckets, a command's counters, and sizes in power-of-two
//! buckets. Each count is one relaxed atomic add.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of a [`Histogram`]: the last ends past half an hour.
pub const BUCKETS: usize = 32;

/// Call durations of one command: bucket `b` counts the calls that took
/// more than `1024 << (b - 1)` ns and at most `1024 << b` ns (bucket 0:
/// up to 1,024 ns).
#[derive(Default)]
pub struct Histogram([AtomicU64; BUCKETS]);

impl Histogram {
    pub fn record(&self, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let b = if ns <= 1024 { 0 } else { (64 - ((ns - 1) >> 10).leading_zeros()) as usize };
        self.0[b.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for b in &self.0 {
            b.store(0, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|b| self.0[b].load(Ordering::Relaxed))
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }

    /// Bucket `b`'s upper bound as Redis reports it, in nanoseconds: the
    /// highest equivalent value in an HdrHistogram of two significant
    /// digits.
    pub fn bucket_nanos(b: usize) -> u64 {
        let bound = 1024u64 << b;
        let resolution = 1u64 << (b + 3);
        bound + resolution - 1
    }

    /// The whole microseconds Redis reports for bucket `b`.
    pub fn bucket_micros(b: usize) -> u64 {
        Self::bucket_nanos(b) / 1000
    }

    /// LATENCY HISTOGRAM's `histogram_usec`: (microseconds, calls up to
    /// then) for each bucket that added calls.
    pub fn cdf(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut total = 0;
        for (b, n) in self.counts().into_iter().enumerate() {
            if n > 0 {
                total += n;
                out.push((Self::bucket_micros(b), total));
            }
        }
        out
    }

    /// The duration (microseconds) at percentile `p` (0 to 100): the upper
    /// bound of the bucket it falls in.
    pub fn percentile(&self, p: f64) -> f64 {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let wanted = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in counts.into_iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return Self::bucket_nanos(b) as f64 / 1000.0;
            }
        }
        0.0
    }
}

/// The counters of one command (RESP: or subcommand; Redis's `cmdstat_`).
#[derive(Default)]
pub struct CommandStat {
    pub calls: AtomicU64,
    pub usec: AtomicU64,
    /// Refused before running (a wrong number of arguments).
    pub rejected: AtomicU64,
    /// Ran and replied with an error.
    pub failed: AtomicU64,
    /// How long its calls took (LATENCY HISTOGRAM, INFO latencystats).
    pub histogram: Histogram,
}

impl CommandStat {
    /// One call that ran for `took`, and replied an error if `failed`.
    pub fn record(&self, took: std::time::Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.usec.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.histogram.record(took);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Histogram {
    /// Bucket `b`'s exact upper bound, in seconds (`1024 << b` ns); the
    /// last bucket has none (`f64::MAX`, OpenMetrics' `+Inf`).
    pub fn bucket_seconds(b: usize) -> f64 {
        if b + 1 >= BUCKETS {
            f64::MAX
        } else {
            (1024u64 << b) as f64 / 1e9
        }
    }
}

/// Buckets of a [`SizeHistogram`].
pub const SIZE_BUCKETS: usize = 16;

/// How many things each event took (chunks per group-commit round):
/// bucket `b` counts events of at most `1 << b` (the last: any more).
#[derive(Debug, Default)]
pub struct SizeHistogram {
    buckets: [AtomicU64; SIZE_BUCKETS],
    sum: AtomicU64,
}

impl SizeHistogram {
    pub fn record(&self, n: u64) {
        let b = if n <= 1 { 0 } else { (64 - (n - 1).leading_zeros()) as usize };
        self.buckets[b.min(SIZE_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    /// (upper bound, events in the bucket) for each bucket, the last
    /// bound `f64::MAX`; and the sum of every event's size.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64) {
        let buckets = (0..SIZE_BUCKETS)
            .map(|b| {
                let bound = if b + 1 == SIZE_BUCKETS { f64::MAX } else { (1u64 << b) as f64 };
                (bound, self.buckets[b].load(Ordering::Relaxed))
            })
            .collect();
        (buckets, self.sum.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_power_of_two_buckets() {
        let h = SizeHistogram::default();
        for n in [0, 1, 2, 3, 4, 5, 1 << 20] {
            h.record(n);
        }
        let (buckets, sum) = h.snapshot();
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(&counts[..4], &[2, 1, 2, 1]);
        assert_eq!(counts[SIZE_BUCKETS - 1], 1);
        assert_eq!(sum, 15 + (1 << 20));
        assert_eq!(buckets[3].0, 8.0);
    }

    #[test]
    fn durations_fall_in_their_bucket_and_bounds_are_exact() {
        let h = Histogram::default();
        h.record(std::time::Duration::from_nanos(1024));
        h.record(std::time::Duration::from_nanos(1025));
        let counts = h.counts();
        assert_eq!((counts[0], counts[1]), (1, 1));
        assert_eq!(Histogram::bucket_seconds(1), 2048e-9);
        assert_eq!(Histogram::bucket_seconds(BUCKETS - 1), f64::MAX);
    }
}
