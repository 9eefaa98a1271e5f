//! The node's seq clock and snapshot pins.
//!
//! Every write batch on the node takes the next seq from one counter, so seqs
//! strictly increase within each chunk and a single number names a state of
//! the whole node: a *snapshot*. A snapshot `S` is only handed out once it is
//! *stable*: every seq at or below it is durable (or failed), so reading at
//! `S` gives the same answer every time.
//!
//! Pins keep snapshots readable: compaction keeps every version a pinned
//! snapshot can see. They are counted, since two clients may pin the same seq.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct ClockState {
    /// The next seq to hand out.
    next: u64,
    /// Seqs handed out whose batches are not yet durable, each with the
    /// number of its parts still unsettled (one batch per chunk: one part,
    /// unless [`SeqClock::allocate_parts`] gave the seq to several).
    in_flight: BTreeMap<u64, u32>,
    /// Pinned snapshot -> number of holders.
    pins: BTreeMap<u64, u32>,
    /// The highest seq settled so far. It may be above the stable seq: a
    /// batch is acknowledged as soon as it is durable, while an older one
    /// on another chunk may still be in flight.
    settled_max: u64,
    /// The highest stable seq handed to compaction or a split
    /// ([`SeqClock::retention`]): an unpinned snapshot below it may have
    /// lost versions, so it can no longer be pinned.
    horizon: u64,
}

impl ClockState {
    fn stable(&self) -> u64 {
        match self.in_flight.first_key_value() {
            Some((&oldest, _)) => oldest - 1,
            None => self.next - 1,
        }
    }
}

/// Shared by every chunk actor and connection of a node.
#[derive(Debug)]
pub struct SeqClock {
    /// A std mutex: it is held for a few map operations and never across an
    /// await or any I/O.
    state: Mutex<ClockState>,
    /// Woken whenever batches settle (the stable seq may have moved).
    settled: tokio::sync::Notify,
}

impl SeqClock {
    /// A clock whose first seq follows `last_used` (the highest seq found in
    /// any chunk log at startup).
    pub fn new(last_used: u64) -> Self {
        SeqClock {
            state: Mutex::new(ClockState {
                next: last_used + 1,
                settled_max: last_used,
                ..Default::default()
            }),
            settled: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        // A panic while holding this lock leaves plain maps in a consistent
        // state (every method finishes its edits before returning), so a
        // poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the next seq for a batch that is about to be logged.
    pub fn allocate(&self) -> u64 {
        self.allocate_parts(1)
    }

    /// Takes the next seq for one batch written as `parts` batches (one
    /// per chunk, all under this seq): the seq settles when every part has
    /// been resolved, so no stable snapshot shows some parts and not the
    /// others.
    ///
    /// # Panics
    /// When `parts` is 0.
    pub fn allocate_parts(&self, parts: u32) -> u64 {
        assert!(parts > 0, "a batch has at least one part");
        let mut s = self.lock();
        let seq = s.next;
        s.next += 1;
        s.in_flight.insert(seq, parts);
        seq
    }

    /// Marks batches (or one part each of them) as settled: durable, or
    /// failed for good.
    pub fn resolve(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut s = self.lock();
        for seq in seqs {
            match s.in_flight.get_mut(&seq) {
                Some(parts) if *parts > 1 => *parts -= 1,
                Some(_) => {
                    s.in_flight.remove(&seq);
                    s.settled_max = s.settled_max.max(seq);
                }
                None => debug_assert!(false, "seq {seq} resolved twice"),
            }
        }
        drop(s);
        self.settled.notify_waiters();
    }

    /// Puts `seq`, handed out before a restart, in flight again for
    /// `parts` parts: a batch the intent log completes at start (the
    /// clock has [`SeqClock::observe`]d it already).
    pub fn adopt(&self, seq: u64, parts: u32) {
        let mut s = self.lock();
        debug_assert!(seq < s.next, "adopted seq {seq} was never handed out");
        *s.in_flight.entry(seq).or_insert(0) += parts;
    }

    /// Raises the next seq above `seq` (one found at start outside the
    /// chunk logs, in the intent log).
    pub fn observe(&self, seq: u64) {
        let mut s = self.lock();
        if s.next <= seq {
            s.next = seq + 1;
            s.settled_max = s.settled_max.max(seq);
        }
    }

    /// The last seq handed out: everything applied so far is at or below it.
    pub fn last_allocated(&self) -> u64 {
        self.lock().next - 1
    }

    /// Waits until every batch at or below `seq` has settled.
    pub async fn wait_stable(&self, seq: u64) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stable() >= seq {
                return;
            }
            notified.await;
        }
    }

    /// The highest seq settled so far: every write acknowledged before this
    /// call is at or below it. What a fresh read must wait for (the stable
    /// seq can lag behind an acknowledged write).
    pub fn settled_max(&self) -> u64 {
        self.lock().settled_max
    }

    /// The newest snapshot every chunk can serve consistently.
    pub fn stable(&self) -> u64 {
        self.lock().stable()
    }

    /// Pins the current stable snapshot and returns it.
    pub fn pin_stable(&self) -> u64 {
        let mut s = self.lock();
        let seq = s.stable();
        *s.pins.entry(seq).or_insert(0) += 1;
        seq
    }

    /// Pins `seq` once more: a snapshot already pinned (a round's upper seq
    /// becoming a checkpoint), or one restored at start before any chunk
    /// compacts. A snapshot must be pinned from the moment it is chosen
    /// (with [`SeqClock::pin_stable`]): pinning one later, after a
    /// compaction or split kept only what the pins of that moment see,
    /// would claim versions that may be gone, and a view reading its old
    /// values there would retract the wrong rows.
    pub fn pin(&self, seq: u64) {
        let mut s = self.lock();
        assert!(seq <= s.stable(), "pinned a snapshot that is not stable yet");
        let kept = s.pins.contains_key(&seq) || seq >= s.horizon;
        debug_assert!(kept, "pinned {seq}, below the compaction horizon {}", s.horizon);
        if !kept {
            tracing::error!(
                seq,
                horizon = s.horizon,
                "pinned a snapshot compaction may have passed"
            );
        }
        *s.pins.entry(seq).or_insert(0) += 1;
    }

    /// Pins `seq` (at or below the stable seq) if every version it sees is
    /// still kept: it is pinned already, or no compaction or split was told
    /// to keep less than it ([`SeqClock::retention`]). False (and nothing
    /// pinned) otherwise: the caller must choose a newer snapshot. For a
    /// snapshot chosen by other means than [`SeqClock::pin_stable`] (a cut
    /// some view published).
    pub fn try_pin(&self, seq: u64) -> bool {
        let mut s = self.lock();
        if seq > s.stable() || (seq < s.horizon && !s.pins.contains_key(&seq)) {
            return false;
        }
        *s.pins.entry(seq).or_insert(0) += 1;
        true
    }

    /// Releases one pin of `seq`; false when `seq` is not pinned.
    pub fn unpin(&self, seq: u64) -> bool {
        let mut s = self.lock();
        match s.pins.get_mut(&seq) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                s.pins.remove(&seq);
                true
            }
            None => false,
        }
    }

    pub fn is_pinned(&self, seq: u64) -> bool {
        self.lock().pins.contains_key(&seq)
    }

    /// What compaction must preserve: the pinned snapshots and the stable
    /// seq. From here on, only pinned snapshots and those at or above this
    /// stable seq are readable, so nothing below it can be pinned anew.
    pub fn retention(&self) -> (Vec<u64>, u64) {
        let mut s = self.lock();
        let stable = s.stable();
        s.horizon = s.horizon.max(stable);
        (s.pins.keys().copied().collect(), stable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_waits_for_the_oldest_in_flight_seq() {
        let c = SeqClock::new(10);
        assert_eq!(c.stable(), 10);
        let a = c.allocate();
        let b = c.allocate();
        assert_eq!((a, b), (11, 12));
        assert_eq!(c.stable(), 10);
        c.resolve([b]);
        assert_eq!(c.stable(), 10);
        c.resolve([a]);
        assert_eq!(c.stable(), 12);
    }

    #[test]
    fn a_seq_of_several_parts_settles_with_its_last_part() {
        let c = SeqClock::new(10);
        let shared = c.allocate_parts(3);
        let after = c.allocate();
        c.resolve([after, shared, shared]);
        assert_eq!((c.stable(), c.settled_max()), (10, 12), "one part still in flight");
        c.resolve([shared]);
        assert_eq!((c.stable(), c.settled_max()), (12, 12));
        c.observe(40);
        assert_eq!(c.allocate(), 41);
        c.observe(5);
        assert_eq!(c.allocate(), 42);
    }

    #[test]
    fn waiting_for_stable_ends_when_older_batches_settle() {
        let c = std::sync::Arc::new(SeqClock::new(0));
        let (a, b) = (c.allocate(), c.allocate());
        assert_eq!(c.last_allocated(), b);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let waiter = tokio::spawn({
                let c = c.clone();
                async move { c.wait_stable(b).await }
            });
            c.resolve([b]);
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "a is still in flight");
            c.resolve([a]);
            waiter.await.expect("waiter");
        });
    }

    #[test]
    fn settled_max_runs_ahead_of_stable() {
        let c = SeqClock::new(3);
        assert_eq!(c.settled_max(), 3);
        let (a, b) = (c.allocate(), c.allocate());
        c.resolve([b]);
        // `b` is acknowledged, `a` still in flight: fresh reads must wait
        // for `b`, which the stable seq does not show yet.
        assert_eq!((c.stable(), c.settled_max()), (3, b));
        c.resolve([a]);
        assert_eq!((c.stable(), c.settled_max()), (b, b));
    }

    /// Postmortem: views chose a round's upper seq, wrote their rows, and
    /// only then pinned it; a source chunk split in between kept only the
    /// versions the older pins saw, so the next round read wrong old values
    /// and left orphan rows behind. A snapshot is now pinned when chosen,
    /// and pinning one below what compaction was told to keep is caught.
    #[test]
    fn a_snapshot_is_pinned_when_chosen_and_never_after_compaction_passed_it() {
        let c = SeqClock::new(5);
        let round = c.pin_stable();
        let seq = c.allocate();
        c.resolve([seq]);
        let (pins, stable) = c.retention();
        assert_eq!((pins, stable), (vec![round], 6));
        // Pinning the chosen snapshot once more (it becomes a checkpoint)
        // is fine: its versions were kept.
        c.pin(round);
        assert!(c.unpin(round) && c.unpin(round));
        assert!(!c.try_pin(round), "compaction may have dropped what it saw");
        assert!(c.try_pin(stable) && c.unpin(stable));
        assert!(!c.try_pin(stable + 1), "not stable yet");
        let late = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.pin(round)));
        assert_eq!(late.is_err(), cfg!(debug_assertions));
    }

    #[test]
    fn pins_are_counted() {
        let c = SeqClock::new(5);
        assert_eq!(c.pin_stable(), 5);
        assert_eq!(c.pin_stable(), 5);
        assert!(c.unpin(5));
        assert!(c.is_pinned(5));
        assert!(c.unpin(5));
        assert!(!c.is_pinned(5));
        assert!(!c.unpin(5));
        assert_eq!(c.retention(), (vec![], 5));
    }
}
