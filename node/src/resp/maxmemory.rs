//! `maxmemory`: while the node's resident memory is over it, commands that
//! may grow the data (Redis's `denyoom` flag) are refused with Redis's
//! `OOM` error, as a Redis with `maxmemory-policy noeviction` refuses
//! them. Monotable keeps its data on disk and evicts nothing, whatever the
//! policy: every `maxmemory-policy` behaves as `noeviction`.
//!
//! Used memory is the process's resident set (INFO's `used_memory`), read
//! from `/proc` at most every [`SAMPLE_EVERY_MS`] while a limit is set; a
//! node without one never reads it for this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Redis's `shared.oomerr`.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// The resident size is sampled at most this often (ms).
pub const SAMPLE_EVERY_MS: u64 = 10;

/// The limit, and the last sample of the resident size.
pub struct MemoryGuard {
    /// Bytes; 0: no limit.
    limit: AtomicU64,
    epoch: Instant,
    /// When the sample was taken (ms since `epoch`); `u64::MAX`: never.
    sampled_ms: AtomicU64,
    rss: AtomicU64,
}

impl Default for MemoryGuard {
    fn default() -> Self {
        MemoryGuard {
            limit: AtomicU64::new(0),
            epoch: Instant::now(),
            sampled_ms: AtomicU64::new(u64::MAX),
            rss: AtomicU64::new(0),
        }
    }
}

impl MemoryGuard {
    /// CONFIG SET maxmemory: `bytes`, 0 for none. The next check samples
    /// afresh.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Release);
        self.sampled_ms.store(u64::MAX, Ordering::Release);
    }

    /// Whether the node is over its limit now (false without one).
    pub fn over(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        if limit == 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let sampled = self.sampled_ms.load(Ordering::Acquire);
        let rss = if sampled == u64::MAX || now.saturating_sub(sampled) >= SAMPLE_EVERY_MS {
            let rss = super::info::rss_bytes();
            self.rss.store(rss, Ordering::Release);
            self.sampled_ms.store(now, Ordering::Release);
            rss
        } else {
            self.rss.load(Ordering::Acquire)
        };
        rss > limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_limit_below_the_resident_size_refuses() {
        let guard = MemoryGuard::default();
        assert!(!guard.over(), "no limit");
        guard.set_limit(1);
        assert!(guard.over());
        guard.set_limit(u64::MAX / 2);
        assert!(!guard.over());
        guard.set_limit(0);
        assert!(!guard.over());
    }
}
