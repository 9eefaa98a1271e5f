//! Password authentication, shared by the native and the Redis protocol so
//! that one password (`serve --requirepass`) protects both ports and one
//! throttle counts failures on either.
//!
//! # Throttling
//!
//! Redis answers every AUTH at once, which lets a client try passwords as
//! fast as the network allows. Here each failed attempt makes the next one
//! from the same address wait longer: the failure's reply waits
//! [`AUTH_FAILURE_DELAY_BASE_MS`], doubling with each further failure up to
//! [`AUTH_FAILURE_DELAY_MAX_MS`]. Attempts from one address are checked one
//! at a time, each after the previous failure's delay has passed, so opening
//! more connections does not buy more guesses, and closing a connection
//! while its failure waits does not skip the wait. A success forgets the
//! address's failures, and so do [`AUTH_FAILURE_MEMORY_SECS`] without one.
//! A correct password from a client that has not failed is never delayed.
//! IPv6 addresses count per /64, the block one host usually holds.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Delay of the reply to an address's first failed attempt.
pub const AUTH_FAILURE_DELAY_BASE_MS: u64 = 100;

/// The delay doubles with each failure up to this.
pub const AUTH_FAILURE_DELAY_MAX_MS: u64 = 3_000;

/// An address's failures are forgotten after this long without a new one.
pub const AUTH_FAILURE_MEMORY_SECS: u64 = 600;

/// Most addresses whose failures are remembered; past it, forgotten ones
/// are dropped first, and new addresses then share one record (and so one
/// throttle) until room frees up.
pub const AUTH_ADDRESSES_TRACKED_MAX: usize = 10_000;

/// A password held in memory. Its `Debug` form hides it, so a logged
/// configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// `None` for an empty password: as with Redis's `requirepass ""`, an
    /// empty password means none.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Secret> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then_some(Secret(bytes))
    }

    /// The password itself, for a node that authenticates to its peers.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Compares in time that depends only on `given`'s length, never on
    /// where it first differs from the secret nor on the secret's length.
    pub fn matches(&self, given: &[u8]) -> bool {
        let secret = &self.0;
        // Walk `given` whole, comparing each byte with the secret's byte
        // at that position (wrapping around), and fold the length
        // difference in; no early exit.
        let mut diff = u8::from(given.len() != secret.len());
        for (i, &b) in given.iter().enumerate() {
            diff |= b ^ secret[i % secret.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// The password is wrong.
    Wrong,
}

/// What one address has failed, and when it may try again.
#[derive(Debug)]
struct Failures {
    count: u32,
    /// The next attempt from this address is checked no earlier than this.
    not_before: Instant,
    last_failure: Instant,
}

/// One address's record. A tokio mutex because an attempt holds it across
/// its wait for `not_before`: that is what makes attempts from one address
/// take turns.
type Record = Arc<tokio::sync::Mutex<Option<Failures>>>;

/// The node's password and the failure throttle. Owned by the node; both
/// protocol servers check passwords through it.
pub struct Auth {
    password: Option<Secret>,
    /// Failure records by address (IPv6 by /64). A std mutex: held only to
    /// find or insert a record, never across an await.
    records: Mutex<HashMap<IpAddr, Record>>,
    /// Failed attempts since the node started, on both protocols.
    failures_total: AtomicU64,
}

/// The address that stands for every address once the table is full.
const OVERFLOW_ADDRESS: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// Delay after the `count`th failure in a row.
pub fn failure_delay(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    let ms = AUTH_FAILURE_DELAY_BASE_MS.saturating_mul(1 << doublings);
    Duration::from_millis(ms.min(AUTH_FAILURE_DELAY_MAX_MS))
}

/// The key an address's failures are counted under.
fn throttle_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let block = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(block))
        }
        v4 => v4,
    }
}

impl Auth {
    pub fn new(password: Option<Secret>) -> Auth {
        Auth { password, records: Mutex::new(HashMap::new()), failures_total: AtomicU64::new(0) }
    }

    /// Whether clients must authenticate.
    pub fn is_required(&self) -> bool {
        self.password.is_some()
    }

    /// Failed attempts since the node started.
    pub fn failures_total(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }

    /// Checks `given` for a client at `peer`; always succeeds on a node
    /// without a password. Waits while earlier failures from the same
    /// address are being throttled, and on a failure waits its own delay
    /// before returning.
    pub async fn check(&self, peer: IpAddr, given: &[u8]) -> Result<(), AuthError> {
        let Some(password) = &self.password else { return Ok(()) };
        self.check_with(peer, || password.matches(given)).await
    }

    /// The node's password (`serve --requirepass`), if it has one.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// Throttles an attempt from `peer` whose outcome `matches` decides
    /// (the Redis protocol's ACL users), as [`Auth::check`] throttles the
    /// node's password: the same records, delays and count.
    pub async fn check_with(
        &self,
        peer: IpAddr,
        matches: impl FnOnce() -> bool,
    ) -> Result<(), AuthError> {
        let record = self.record(throttle_key(peer));
        let mut failures = record.lock().await;
        let now = Instant::now();
        let memory = Duration::from_secs(AUTH_FAILURE_MEMORY_SECS);
        if failures.as_ref().is_some_and(|f| now.duration_since(f.last_failure) >= memory) {
            *failures = None;
        }
        if let Some(f) = failures.as_ref() {
            tokio::time::sleep_until(f.not_before).await;
        }
        if matches() {
            *failures = None;
            return Ok(());
        }
        let now = Instant::now();
        let count = failures.as_ref().map_or(0, |f| f.count).saturating_add(1);
        let not_before = now + failure_delay(count);
        *failures = Some(Failures { count, not_before, last_failure: now });
        drop(failures);
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, failures_in_a_row = count, "authentication failed");
        tokio::time::sleep_until(not_before).await;
        Err(AuthError::Wrong)
    }

    fn record(&self, key: IpAddr) -> Record {
        // Every critical section leaves the map consistent; a poisoned lock
        // is still usable.
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = records.get(&key) {
            return r.clone();
        }
        if records.len() >= AUTH_ADDRESSES_TRACKED_MAX {
            // Keep the records someone is using or that still throttle.
            let now = Instant::now();
            let memory = Duration::from_secs(AUTH_FAILURE_MEMORY_SECS);
            records.retain(|_, r| match r.try_lock() {
                Ok(f) => f.as_ref().is_some_and(|f| now.duration_since(f.last_failure) < memory),
                Err(_) => true,
            });
        }
        let key = if records.len() >= AUTH_ADDRESSES_TRACKED_MAX { OVERFLOW_ADDRESS } else { key };
        records.entry(key).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(Secret::new("s3cret"))
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn secrets_compare_by_content_and_length() {
        let s = Secret::new("s3cret").expect("not empty");
        assert!(s.matches(b"s3cret"));
        assert!(!s.matches(b"s3cre"));
        assert!(!s.matches(b"s3crets"));
        // Wrapping around must not make a repetition match.
        assert!(!s.matches(b"s3crets3cret"));
        assert!(!s.matches(b""));
        assert!(!s.matches(b"S3cret"));
        assert!(Secret::new("").is_none());
        assert_eq!(format!("{s:?}"), "Secret(<hidden>)");
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(failure_delay(1), Duration::from_millis(AUTH_FAILURE_DELAY_BASE_MS));
        assert_eq!(failure_delay(2), Duration::from_millis(2 * AUTH_FAILURE_DELAY_BASE_MS));
        assert_eq!(failure_delay(40), Duration::from_millis(AUTH_FAILURE_DELAY_MAX_MS));
        assert_eq!(failure_delay(u32::MAX), Duration::from_millis(AUTH_FAILURE_DELAY_MAX_MS));
    }

    #[test]
    fn ipv6_counts_per_block() {
        let a: IpAddr = "2001:db8::1".parse().expect("valid");
        let b: IpAddr = "2001:db8::ffff:2".parse().expect("valid");
        let other: IpAddr = "2001:db8:0:1::1".parse().expect("valid");
        assert_eq!(throttle_key(a), throttle_key(b));
        assert_ne!(throttle_key(a), throttle_key(other));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("valid");
        assert_eq!(throttle_key(mapped), PEER);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_delayed_and_successes_reset() {
        let auth = auth();
        let start = Instant::now();
        assert_eq!(auth.check(PEER, b"nope").await, Err(AuthError::Wrong));
        assert_eq!(auth.check(PEER, b"nope").await, Err(AuthError::Wrong));
        assert_eq!(auth.check(PEER, b"nope").await, Err(AuthError::Wrong));
        let three = failure_delay(1) + failure_delay(2) + failure_delay(3);
        assert_eq!(start.elapsed(), three);
        assert_eq!(auth.failures_total(), 3);
        // The right password, once the last failure's delay is over, is
        // not delayed, and forgets the failures.
        let t = Instant::now();
        assert_eq!(auth.check(PEER, b"s3cret").await, Ok(()));
        assert_eq!(t.elapsed(), Duration::ZERO);
        let t = Instant::now();
        assert_eq!(auth.check(PEER, b"nope").await, Err(AuthError::Wrong));
        assert_eq!(t.elapsed(), failure_delay(1));
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_from_one_address_take_turns() {
        let auth = Arc::new(auth());
        let start = Instant::now();
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.check(PEER, b"guess").await })
            })
            .collect();
        for t in tries {
            assert_eq!(t.await.expect("no panic"), Err(AuthError::Wrong));
        }
        // Four guesses in parallel cost as much time as four in a row.
        let total: Duration = (1..=4).map(failure_delay).sum();
        assert_eq!(start.elapsed(), total);
        // Another address is not slowed by them.
        let t = Instant::now();
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(auth.check(other, b"s3cret").await, Ok(()));
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    // Regression: a client that closed its connection while its failure
    // waited would, if the wait were only on its own task, let the next
    // guess run at once.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_failure_still_delays_the_next_attempt() {
        let auth = auth();
        assert_eq!(auth.check(PEER, b"a").await, Err(AuthError::Wrong));
        let abandoned = tokio::time::timeout(Duration::from_millis(1), auth.check(PEER, b"b"));
        assert!(abandoned.await.is_err(), "the second failure waits its delay");
        let t = Instant::now();
        assert_eq!(auth.check(PEER, b"c").await, Err(AuthError::Wrong));
        // Waited out the abandoned failure's delay, then its own.
        assert!(t.elapsed() >= failure_delay(2) + failure_delay(3) - Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_forgotten_after_a_while() {
        let auth = auth();
        for _ in 0..5 {
            assert_eq!(auth.check(PEER, b"nope").await, Err(AuthError::Wrong));
        }
        tokio::time::sleep(Duration::from_secs(AUTH_FAILURE_MEMORY_SECS)).await;
        let t = Instant::now();
        assert_eq!(auth.check(PEER, b"nope").await, Err(AuthError::Wrong));
        assert_eq!(t.elapsed(), failure_delay(1));
    }

    #[tokio::test]
    async fn a_node_without_a_password_accepts_anything() {
        let open = Auth::new(None);
        assert!(!open.is_required());
        assert_eq!(open.check(PEER, b"whatever").await, Ok(()));
    }
}
