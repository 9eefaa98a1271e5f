//! An ordered map whose every node also holds the reduction of its subtree,
//! so the reduction of any key range costs O(log n) combines.
//!
//! This is the in-chunk half of the reduce tree: CouchDB keeps a reduction in
//! every inner node of its B-tree for the same reason. The map is a treap
//! (a binary search tree kept balanced in expectation by random priorities):
//! inserts and removals touch one root-to-leaf path and recompute the
//! reductions along it; a range query combines whole subtrees along the two
//! boundary paths and never visits a row strictly inside the range.
//!
//! The combine function comes from a [`Monoid`]: it must be associative, and
//! is called with its operands in key order, so it need not be commutative.

use std::cmp::Ordering;
use std::ops::Bound;

/// How reductions combine. `combine` must be associative.
pub trait Monoid {
    type R: Clone;
    fn combine(&self, left: &Self::R, right: &Self::R) -> Self::R;
}

struct Node<R> {
    key: Box<[u8]>,
    /// The row's own reduction.
    leaf: R,
    /// The reduction of this whole subtree, in key order.
    subtree: R,
    priority: u64,
    left: Option<Box<Node<R>>>,
    right: Option<Box<Node<R>>>,
}

/// The tree does not own its monoid: every method that combines takes it,
/// so many trees (one per chunk of a range) can share one function.
pub struct ReduceTree<R> {
    root: Option<Box<Node<R>>>,
    len: usize,
    /// xorshift state for priorities; seeded, so runs are reproducible.
    rng: u64,
}

/// Combines two optional reductions in order (`None`: no rows).
pub(crate) fn join<M: Monoid>(m: &M, a: Option<M::R>, b: Option<M::R>) -> Option<M::R> {
    match (a, b) {
        (Some(a), Some(b)) => Some(m.combine(&a, &b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<R: Clone> Default for ReduceTree<R> {
    fn default() -> Self {
        ReduceTree { root: None, len: 0, rng: 0x853c_49e6_748f_ea9b }
    }
}

impl<R: Clone> ReduceTree<R> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn next_priority(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Sets the row `key` to `leaf`, replacing any row with the same key.
    pub fn insert<M: Monoid<R = R>>(&mut self, m: &M, key: &[u8], leaf: R) {
        let priority = self.next_priority();
        let root = self.root.take();
        let (root, added) = insert(m, root, key, leaf, priority);
        self.root = Some(root);
        self.len += usize::from(added);
    }

    /// Removes the row `key`; false if there was none.
    pub fn remove<M: Monoid<R = R>>(&mut self, m: &M, key: &[u8]) -> bool {
        let root = self.root.take();
        let (root, removed) = remove(m, root, key);
        self.root = root;
        self.len -= usize::from(removed);
        removed
    }

    /// The row's own reduction.
    pub fn get(&self, key: &[u8]) -> Option<&R> {
        let mut node = self.root.as_deref();
        while let Some(n) = node {
            match key.cmp(&n.key) {
                Ordering::Less => node = n.left.as_deref(),
                Ordering::Greater => node = n.right.as_deref(),
                Ordering::Equal => return Some(&n.leaf),
            }
        }
        None
    }

    /// The reduction of every row; `None` when there are none.
    pub fn total(&self) -> Option<R> {
        self.root.as_ref().map(|n| n.subtree.clone())
    }

    /// The reduction of the rows within `bounds`, in key order.
    pub fn reduce<M: Monoid<R = R>>(
        &self,
        m: &M,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
    ) -> Option<R> {
        query(m, self.root.as_deref(), bounds.0, bounds.1)
    }

    /// The smallest key within `lower` (or any key, when unbounded).
    pub fn first_key_from(&self, lower: Bound<&[u8]>) -> Option<&[u8]> {
        let mut node = self.root.as_deref();
        let mut best = None;
        while let Some(n) = node {
            if above(lower, &n.key) {
                best = Some(&*n.key);
                node = n.left.as_deref();
            } else {
                node = n.right.as_deref();
            }
        }
        best
    }

    /// Every row in key order (for tests and rebuilds).
    pub fn rows(&self) -> Vec<(&[u8], &R)> {
        fn walk<'a, R>(n: Option<&'a Node<R>>, out: &mut Vec<(&'a [u8], &'a R)>) {
            if let Some(n) = n {
                walk(n.left.as_deref(), out);
                out.push((&n.key, &n.leaf));
                walk(n.right.as_deref(), out);
            }
        }
        let mut out = Vec::with_capacity(self.len);
        walk(self.root.as_deref(), &mut out);
        out
    }
}

/// Whether `key` satisfies the lower bound.
fn above(lower: Bound<&[u8]>, key: &[u8]) -> bool {
    match lower {
        Bound::Unbounded => true,
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
    }
}

/// Whether `key` satisfies the upper bound.
fn below(upper: Bound<&[u8]>, key: &[u8]) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => key <= u,
        Bound::Excluded(u) => key < u,
    }
}

fn refresh<M: Monoid>(m: &M, n: &mut Node<M::R>) {
    let left = n.left.as_ref().map(|l| &l.subtree);
    let right = n.right.as_ref().map(|r| &r.subtree);
    n.subtree = match (left, right) {
        (None, None) => n.leaf.clone(),
        (Some(l), None) => m.combine(l, &n.leaf),
        (None, Some(r)) => m.combine(&n.leaf, r),
        (Some(l), Some(r)) => m.combine(&m.combine(l, &n.leaf), r),
    };
}

fn rotate_right<M: Monoid>(m: &M, mut n: Box<Node<M::R>>) -> Box<Node<M::R>> {
    let mut l = n.left.take().expect("rotate right needs a left child");
    n.left = l.right.take();
    refresh(m, &mut n);
    l.right = Some(n);
    refresh(m, &mut l);
    l
}

fn rotate_left<M: Monoid>(m: &M, mut n: Box<Node<M::R>>) -> Box<Node<M::R>> {
    let mut r = n.right.take().expect("rotate left needs a right child");
    n.right = r.left.take();
    refresh(m, &mut n);
    r.left = Some(n);
    refresh(m, &mut r);
    r
}

fn insert<M: Monoid>(
    m: &M,
    node: Option<Box<Node<M::R>>>,
    key: &[u8],
    leaf: M::R,
    priority: u64,
) -> (Box<Node<M::R>>, bool) {
    let Some(mut n) = node else {
        let subtree = leaf.clone();
        let n = Node { key: key.into(), leaf, subtree, priority, left: None, right: None };
        return (Box::new(n), true);
    };
    match key.cmp(&n.key) {
        Ordering::Equal => {
            n.leaf = leaf;
            refresh(m, &mut n);
            (n, false)
        }
        Ordering::Less => {
            let (child, added) = insert(m, n.left.take(), key, leaf, priority);
            let rotate = child.priority > n.priority;
            n.left = Some(child);
            refresh(m, &mut n);
            (if rotate { rotate_right(m, n) } else { n }, added)
        }
        Ordering::Greater => {
            let (child, added) = insert(m, n.right.take(), key, leaf, priority);
            let rotate = child.priority > n.priority;
            n.right = Some(child);
            refresh(m, &mut n);
            (if rotate { rotate_left(m, n) } else { n }, added)
        }
    }
}

fn remove<M: Monoid>(
    m: &M,
    node: Option<Box<Node<M::R>>>,
    key: &[u8],
) -> (Option<Box<Node<M::R>>>, bool) {
    let Some(mut n) = node else { return (None, false) };
    let removed = match key.cmp(&n.key) {
        Ordering::Less => {
            let (child, removed) = remove(m, n.left.take(), key);
            n.left = child;
            removed
        }
        Ordering::Greater => {
            let (child, removed) = remove(m, n.right.take(), key);
            n.right = child;
            removed
        }
        Ordering::Equal => return (merge(m, n.left.take(), n.right.take()), true),
    };
    refresh(m, &mut n);
    (Some(n), removed)
}

/// Joins two treaps whose keys do not overlap (all of `a` below all of `b`).
fn merge<M: Monoid>(
    m: &M,
    a: Option<Box<Node<M::R>>>,
    b: Option<Box<Node<M::R>>>,
) -> Option<Box<Node<M::R>>> {
    match (a, b) {
        (None, b) => b,
        (a, None) => a,
        (Some(mut a), Some(mut b)) => {
            if a.priority > b.priority {
                a.right = merge(m, a.right.take(), Some(b));
                refresh(m, &mut a);
                Some(a)
            } else {
                b.left = merge(m, Some(a), b.left.take());
                refresh(m, &mut b);
                Some(b)
            }
        }
    }
}

/// Reduction of the rows of a subtree within `[lower, upper]`. Once one
/// side is known to hold for the whole subtree it becomes unbounded, so
/// every level either takes a whole subtree or descends one way: O(depth).
fn query<M: Monoid>(
    m: &M,
    node: Option<&Node<M::R>>,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
) -> Option<M::R> {
    let n = node?;
    if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
        return Some(n.subtree.clone());
    }
    if !above(lower, &n.key) {
        return query(m, n.right.as_deref(), lower, upper);
    }
    if !below(upper, &n.key) {
        return query(m, n.left.as_deref(), lower, upper);
    }
    let left = query(m, n.left.as_deref(), lower, Bound::Unbounded);
    let right = query(m, n.right.as_deref(), Bound::Unbounded, upper);
    join(m, join(m, left, Some(n.leaf.clone())), right)
}

/// Monoids for tests of the reduce tree and its levels.
#[cfg(test)]
pub(crate) mod test_monoids {
    use super::Monoid;

    /// Concatenation: associative but not commutative, so it catches any
    /// combine done out of key order.
    pub struct Concat;
    impl Monoid for Concat {
        type R = String;
        fn combine(&self, l: &String, r: &String) -> String {
            format!("{l}{r}")
        }
    }

    /// Sums, counting how many times `combine` runs, to check O(log n) bounds.
    pub struct Counting(pub std::cell::Cell<u64>);
    impl Monoid for Counting {
        type R = u64;
        fn combine(&self, l: &u64, r: &u64) -> u64 {
            self.0.set(self.0.get() + 1);
            l + r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_monoids::{Concat, Counting};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, char),
        Remove(u8),
        Query(Option<u8>, Option<u8>, bool, bool),
        First(Option<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..64, proptest::char::range('a', 'z')).prop_map(|(k, c)| Op::Insert(k, c)),
            2 => (0u8..64).prop_map(Op::Remove),
            3 => (proptest::option::of(0u8..64), proptest::option::of(0u8..64), any::<bool>(), any::<bool>())
                .prop_map(|(a, b, ai, bi)| Op::Query(a, b, ai, bi)),
            1 => proptest::option::of(0u8..64).prop_map(Op::First),
        ]
    }

    fn bound(k: &Option<Vec<u8>>, inclusive: bool) -> Bound<&[u8]> {
        match k {
            None => Bound::Unbounded,
            Some(k) if inclusive => Bound::Included(k),
            Some(k) => Bound::Excluded(k),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn matches_a_naive_fold(ops in proptest::collection::vec(op(), 1..200)) {
            let mut tree = ReduceTree::new();
            let mut model: BTreeMap<Vec<u8>, String> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, c) => {
                        tree.insert(&Concat, &[k], c.to_string());
                        model.insert(vec![k], c.to_string());
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(tree.remove(&Concat, &[k]), model.remove(&vec![k]).is_some());
                    }
                    Op::Query(a, b, ai, bi) => {
                        let (a, b) = (a.map(|k| vec![k]), b.map(|k| vec![k]));
                        let (lo, hi) = (bound(&a, ai), bound(&b, bi));
                        let empty_range = matches!((lo, hi), (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) if l > h)
                            || matches!((lo, hi), (Bound::Excluded(l), Bound::Excluded(h) | Bound::Included(h)) | (Bound::Included(l), Bound::Excluded(h)) if l == h);
                        let want: String = if empty_range {
                            String::new()
                        } else {
                            model.range::<[u8], _>((lo, hi)).map(|(_, v)| v.as_str()).collect()
                        };
                        let got = tree.reduce(&Concat, (lo, hi)).unwrap_or_default();
                        prop_assert_eq!(got, want);
                    }
                    Op::First(a) => {
                        let a = a.map(|k| vec![k]);
                        let lo = bound(&a, true);
                        let want = model.range::<[u8], _>((lo, Bound::Unbounded)).next().map(|(k, _)| k.clone());
                        prop_assert_eq!(tree.first_key_from(lo).map(<[u8]>::to_vec), want);
                    }
                }
                prop_assert_eq!(tree.len(), model.len());
                let total: String = model.values().map(String::as_str).collect();
                prop_assert_eq!(tree.total().unwrap_or_default(), total);
            }
        }
    }

    #[test]
    fn range_queries_cost_logarithmic_combines() {
        let n = 1u32 << 16;
        let counting = Counting(std::cell::Cell::new(0));
        let mut tree = ReduceTree::new();
        for i in 0..n {
            tree.insert(&counting, &i.to_be_bytes(), 1);
        }
        let mut worst = 0;
        for (lo, hi) in [(1u32, n - 2), (n / 3, n / 2), (17, 40_000), (12_345, 54_321)] {
            counting.0.set(0);
            let (l, h) = (lo.to_be_bytes(), hi.to_be_bytes());
            let got = tree.reduce(&counting, (Bound::Included(&l[..]), Bound::Excluded(&h[..])));
            assert_eq!(got, Some(u64::from(hi - lo)));
            worst = worst.max(counting.0.get());
        }
        // A treap of 65,536 rows is about 2 * 1.39 * 16 = 45 levels deep at
        // worst in expectation; a scan would combine tens of thousands.
        assert!(worst < 200, "{worst} combines for one range query");
    }
}
