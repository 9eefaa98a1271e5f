//! The keys a chunk changed, in seq order, kept while a view still has to
//! see them.
//!
//! A view that last looked at a chunk at seq `C` asks for the keys changed
//! in `(C, S]` and reads each one's value at `C` (held by the view's pin) and
//! at `S`. The journal makes that cost proportional to the changes, not to
//! the chunk. It is kept only for ranges that views read, and trimmed below
//! the oldest checkpoint of those views.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct ChangeJournal {
    /// (seq, key) in seq order; a key appears once per batch that wrote it.
    entries: VecDeque<(u64, Box<[u8]>)>,
}

impl ChangeJournal {
    /// A journal of the given changes, in any order.
    pub fn from_changes(mut changes: Vec<(u64, Box<[u8]>)>) -> Self {
        changes.sort_by_key(|(seq, _)| *seq);
        ChangeJournal { entries: changes.into() }
    }

    pub fn record(&mut self, seq: u64, key: &[u8]) {
        debug_assert!(
            self.entries.back().is_none_or(|(s, _)| *s <= seq),
            "journal seqs go forward"
        );
        self.entries.push_back((seq, key.into()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries above `after`.
    pub fn count_after(&self, after: u64) -> usize {
        self.entries.len() - self.entries.partition_point(|(s, _)| *s <= after)
    }

    /// The distinct keys changed in `(after, upto]`, sorted.
    pub fn keys_changed(&self, after: u64, upto: u64) -> Vec<Vec<u8>> {
        let start = self.entries.partition_point(|(s, _)| *s <= after);
        let mut keys: Vec<Vec<u8>> = self
            .entries
            .range(start..)
            .take_while(|(s, _)| *s <= upto)
            .map(|(_, k)| k.to_vec())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Forgets changes at or below `upto`: every view has seen them.
    pub fn trim(&mut self, upto: u64) {
        let end = self.entries.partition_point(|(s, _)| *s <= upto);
        self.entries.drain(..end);
    }

    /// Forgets changes above `seq`: their batches were never written.
    pub fn discard_above(&mut self, seq: u64) {
        let keep = self.entries.partition_point(|(s, _)| *s <= seq);
        self.entries.truncate(keep);
    }

    /// The changes below `key` and those from `key` on, for a split.
    /// The journal of two chunks merged into one (see
    /// [`super::chunk::Chunk::finish_merge`]): both one's changes, in seq
    /// order.
    pub fn merged(lower: &ChangeJournal, upper: &ChangeJournal) -> ChangeJournal {
        ChangeJournal::from_changes(lower.entries.iter().chain(&upper.entries).cloned().collect())
    }

    pub fn split(&self, key: &[u8]) -> (ChangeJournal, ChangeJournal) {
        let (lower, upper): (VecDeque<_>, VecDeque<_>) =
            self.entries.iter().cloned().partition(|(_, k)| &**k < key);
        (ChangeJournal { entries: lower }, ChangeJournal { entries: upper })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_changed_in_a_window_are_distinct_and_sorted() {
        let mut j = ChangeJournal::default();
        for (seq, key) in [(3, "b"), (5, "a"), (5, "c"), (7, "b"), (9, "d")] {
            j.record(seq, key.as_bytes());
        }
        let keys = |j: &ChangeJournal, a, b| -> Vec<String> {
            j.keys_changed(a, b).into_iter().map(|k| String::from_utf8(k).expect("utf8")).collect()
        };
        assert_eq!(keys(&j, 0, 100), ["a", "b", "c", "d"]);
        assert_eq!(keys(&j, 3, 7), ["a", "b", "c"]);
        assert_eq!(keys(&j, 7, 8), Vec::<String>::new());
        j.trim(5);
        assert_eq!(keys(&j, 0, 100), ["b", "d"]);
        let (lo, hi) = j.split(b"c");
        assert_eq!((lo.len(), hi.len()), (1, 1));
    }
}
