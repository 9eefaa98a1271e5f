//! An order-statistic set of byte keys: how many keys sort below a key
//! (rank), and which key has a given rank (select), in O(log n) expected.
//!
//! A treap (Seidel and Aragon, "Randomized search trees", Algorithmica
//! 16, 1996): a binary search tree by key that is a heap by a random
//! priority per node, each node counting the keys of its subtree. Nodes
//! live in one vector and point at each other by index, so the set is a
//! few allocations however many keys it holds. Priorities come from a
//! generator seeded per set from the OS, so the order keys arrive in
//! cannot make the tree deep.

use super::chunk_index::IndexKey;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    key: IndexKey,
    left: u32,
    right: u32,
    /// Keys in the subtree rooted here, this one included.
    size: u32,
    priority: u32,
}

/// A set of keys with rank and select (see the module doc).
#[derive(Debug, Clone)]
pub struct RankedKeys {
    nodes: Vec<Node>,
    /// Slots of removed nodes, reused first.
    free: Vec<u32>,
    root: u32,
    /// xorshift64 state for priorities.
    rng: u64,
}

impl Default for RankedKeys {
    fn default() -> Self {
        RankedKeys {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            rng: rand::random::<u64>() | 1,
        }
    }
}

impl RankedKeys {
    pub fn len(&self) -> u64 {
        u64::from(self.size(self.root))
    }

    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    fn size(&self, t: u32) -> u32 {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].size
        }
    }

    fn update(&mut self, t: u32) {
        let n = &self.nodes[t as usize];
        let size = 1 + self.size(n.left) + self.size(n.right);
        self.nodes[t as usize].size = size;
    }

    fn next_priority(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 32) as u32
    }

    /// Splits the tree `t` into the keys below `key` (or at most `key`,
    /// when `inclusive`) and the rest.
    fn split(&mut self, t: u32, key: &[u8], inclusive: bool) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let here = self.nodes[t as usize].key.as_slice();
        let goes_left = if inclusive { here <= key } else { here < key };
        if goes_left {
            let (a, b) = self.split(self.nodes[t as usize].right, key, inclusive);
            self.nodes[t as usize].right = a;
            self.update(t);
            (t, b)
        } else {
            let (a, b) = self.split(self.nodes[t as usize].left, key, inclusive);
            self.nodes[t as usize].left = b;
            self.update(t);
            (a, t)
        }
    }

    /// Joins two trees, every key of `a` below every key of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].priority > self.nodes[b as usize].priority {
            let right = self.nodes[a as usize].right;
            self.nodes[a as usize].right = self.merge(right, b);
            self.update(a);
            a
        } else {
            let left = self.nodes[b as usize].left;
            self.nodes[b as usize].left = self.merge(a, left);
            self.update(b);
            b
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            match key.cmp(n.key.as_slice()) {
                std::cmp::Ordering::Less => t = n.left,
                std::cmp::Ordering::Greater => t = n.right,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The set of `keys`, which increase strictly, built in O(n): the
    /// treap of sorted keys is their Cartesian tree by priority, built
    /// with a stack of its right spine (each key, in order, takes as its
    /// left subtree the part of the spine whose priorities are lower).
    pub fn from_sorted(keys: impl IntoIterator<Item = IndexKey>) -> RankedKeys {
        let mut set = RankedKeys::default();
        let mut spine: Vec<u32> = Vec::new();
        // Node ids are in-order positions, so a subtree is the ids from
        // its leftmost node to its rightmost: while a node is on the spine
        // its `size` holds its leftmost id, and once it leaves (the next
        // key goes above it) its rightmost is the id before that key's.
        let mut id = 0u32;
        for key in keys {
            assert!(id != NIL, "under 4 billion keys per chunk");
            debug_assert!(set.nodes.last().is_none_or(|n| n.key < key), "keys increase");
            let priority = set.next_priority();
            let mut left = NIL;
            while let Some(&top) = spine.last() {
                if set.nodes[top as usize].priority > priority {
                    break;
                }
                let t = &mut set.nodes[top as usize];
                t.size = id - t.size;
                left = top;
                spine.pop();
            }
            let leftmost = if left == NIL { id } else { id - set.nodes[left as usize].size };
            if let Some(&top) = spine.last() {
                set.nodes[top as usize].right = id;
            }
            set.nodes.push(Node { key, left, right: NIL, size: leftmost, priority });
            spine.push(id);
            id += 1;
        }
        for &t in &spine {
            let n = &mut set.nodes[t as usize];
            n.size = id - n.size;
        }
        set.root = spine.first().copied().unwrap_or(NIL);
        set
    }

    /// Adds `key`; false when it was there already.
    pub fn insert(&mut self, key: &[u8]) -> bool {
        if self.contains(key) {
            return false;
        }
        let node = Node {
            key: IndexKey::from_slice(key),
            left: NIL,
            right: NIL,
            size: 1,
            priority: self.next_priority(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                let id = u32::try_from(self.nodes.len()).expect("under 4 billion keys per chunk");
                assert!(id != NIL, "under 4 billion keys per chunk");
                self.nodes.push(node);
                id
            }
        };
        let (below, rest) = self.split(self.root, key, false);
        let joined = self.merge(below, id);
        self.root = self.merge(joined, rest);
        true
    }

    /// Takes `key` out; false when it was not there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let (below, rest) = self.split(self.root, key, false);
        let (found, above) = self.split(rest, key, true);
        self.root = self.merge(below, above);
        if found == NIL {
            return false;
        }
        debug_assert_eq!(self.size(found), 1);
        self.nodes[found as usize].key = IndexKey::new();
        self.free.push(found);
        if self.root == NIL {
            // Empty again: give the memory back.
            self.nodes = Vec::new();
            self.free = Vec::new();
        }
        true
    }

    /// How many keys sort below `key` (at or below it, when `inclusive`).
    pub fn rank(&self, key: &[u8], inclusive: bool) -> u64 {
        let mut t = self.root;
        let mut below = 0u64;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let here = n.key.as_slice();
            let left_of = if inclusive { here <= key } else { here < key };
            if left_of {
                below += u64::from(self.size(n.left)) + 1;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        below
    }

    /// The key of rank `rank` (0: the lowest), if there are more keys.
    pub fn select(&self, rank: u64) -> Option<&[u8]> {
        let mut t = self.root;
        let mut rank = rank;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let left = u64::from(self.size(n.left));
            match rank.cmp(&left) {
                std::cmp::Ordering::Less => t = n.left,
                std::cmp::Ordering::Equal => return Some(n.key.as_slice()),
                std::cmp::Ordering::Greater => {
                    rank -= left + 1;
                    t = n.right;
                }
            }
        }
        None
    }

    /// The subtree height (for tests: stays logarithmic).
    #[cfg(test)]
    fn height(&self, t: u32) -> usize {
        if t == NIL {
            return 0;
        }
        let n = &self.nodes[t as usize];
        1 + self.height(n.left).max(self.height(n.right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Inserts and removes of short, colliding keys (NULs and 0xff
        /// included), checked after each step against a `BTreeSet`.
        #[test]
        fn matches_a_btreeset(ops in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..4)),
            0..400,
        )) {
            let mut set = RankedKeys::default();
            let mut model = BTreeSet::new();
            for (add, key) in ops {
                if add {
                    prop_assert_eq!(set.insert(&key), model.insert(key.clone()));
                } else {
                    prop_assert_eq!(set.remove(&key), model.remove(&key));
                }
                prop_assert_eq!(set.len(), model.len() as u64);
                let probe = key;
                prop_assert_eq!(set.rank(&probe, false), model.range(..probe.clone()).count() as u64);
                prop_assert_eq!(set.rank(&probe, true), model.range(..=probe.clone()).count() as u64);
                prop_assert_eq!(set.contains(&probe), model.contains(&probe));
            }
            for (i, key) in model.iter().enumerate() {
                prop_assert_eq!(set.select(i as u64), Some(key.as_slice()));
            }
            prop_assert_eq!(set.select(model.len() as u64), None);
        }
    }

    proptest! {
        /// A set built from sorted keys answers as one built key by key,
        /// and takes inserts and removes after.
        #[test]
        fn built_from_sorted_keys_matches_a_btreeset(
            keys in proptest::collection::btree_set(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 0..5),
                0..300,
            ),
            more in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..3)), 0..50),
        ) {
            let mut set = RankedKeys::from_sorted(keys.iter().map(|k| IndexKey::from_slice(k)));
            let mut model = keys.clone();
            prop_assert_eq!(set.len(), model.len() as u64);
            for (i, key) in model.iter().enumerate() {
                prop_assert_eq!(set.select(i as u64), Some(key.as_slice()));
                prop_assert_eq!(set.rank(key, false), i as u64);
                prop_assert_eq!(set.size(set.root) as usize, model.len());
            }
            for (add, key) in more {
                if add {
                    prop_assert_eq!(set.insert(&key), model.insert(key.clone()));
                } else {
                    prop_assert_eq!(set.remove(&key), model.remove(&key));
                }
                prop_assert_eq!(set.rank(&key, true), model.range(..=key.clone()).count() as u64);
            }
            for (i, key) in model.iter().enumerate() {
                prop_assert_eq!(set.select(i as u64), Some(key.as_slice()));
            }
        }
    }

    #[test]
    fn a_set_built_from_sorted_keys_is_shallow() {
        let set = RankedKeys::from_sorted(
            (0..100_000u32).map(|i| IndexKey::from_slice(&i.to_be_bytes())),
        );
        assert!(set.height(set.root) < 100, "height {}", set.height(set.root));
        assert_eq!(set.rank(&50_000u32.to_be_bytes(), false), 50_000);
        assert_eq!(set.select(99_999), Some(&99_999u32.to_be_bytes()[..]));
    }

    #[test]
    fn sorted_arrival_keeps_the_tree_shallow() {
        let mut set = RankedKeys::default();
        for i in 0..100_000u32 {
            set.insert(&i.to_be_bytes());
        }
        // Expected height is about 3 ln n (35 here); a list would be 100,000.
        assert!(set.height(set.root) < 100, "height {}", set.height(set.root));
        assert_eq!(set.rank(&50_000u32.to_be_bytes(), false), 50_000);
        assert_eq!(set.select(99_999), Some(&99_999u32.to_be_bytes()[..]));
        for i in 0..100_000u32 {
            assert!(set.remove(&i.to_be_bytes()));
        }
        assert!(set.is_empty());
        assert!(set.nodes.is_empty());
    }
}
