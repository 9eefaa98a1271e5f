//! Writes to one replicated chunk gathered into few Raft entries.
//!
//! openraft 0.9 makes every `client_write` one log entry, appended to the
//! leader's log by a call of its own (a write and a sync request each) and
//! replicated, committed and applied entry by entry. With an entry per
//! write, three local nodes took about 2,000-2,500 durable writes a second
//! from 50 writers, the leader syncing its log about once per write; with
//! writes gathered, 15-17 writes an entry and 3-9 times the rate (see
//! `BENCHMARKS.md`, "Replication").
//!
//! A [`WriteBatcher`] (one per chunk replica) proposes at most
//! [`IN_FLIGHT_MAX`] entries at a time. A write that arrives while that
//! many are in flight waits in its queue; as soon as one is answered, the
//! queued writes (in arrival order, up to [`BATCH_WRITES_MAX`] writes and
//! [`BATCH_BYTES_MAX`] bytes of keys and values) go as the next entry. So
//! the number of entries follows the speed of a Raft round, not the
//! number of writers.
//!
//! An entry of one write is a [`ChunkCommand::Write`]; of several, a
//! [`ChunkCommand::Writes`], which every replica applies write by write in
//! order, each atomic and answered on its own: a write refused alike on
//! every replica (a row limit, a key outside the chunk: `StaleChunkMap`)
//! refuses only itself. A proposal that fails ([`ConsensusError`]: not the
//! leader, no majority in time, the group stopped) fails every write in it
//! with that error, so the caller's rules for an unknown outcome apply to
//! each. Proposals run on tasks of their own, not on a writer's: a writer
//! that gives up waiting does not stop its batch-mates' entry.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use monotable_proto::{ErrorCode, ErrorInfo, WriteOp};
use tokio::sync::oneshot;

use crate::consensus::futures_lite::BoxedFuture;
use crate::consensus::{ConsensusError, Group};
use crate::replica::{decode_replies, decode_reply, encode_command, ChunkCommand, ChunkReply};

/// Entries of one chunk proposed at once, at most. More than one lets the
/// leader append an entry while the one before it is being replicated.
pub const IN_FLIGHT_MAX: usize = 2;

/// Writes in one entry, at most.
pub const BATCH_WRITES_MAX: usize = 1024;

/// Bytes of keys and values in one entry, at most (a write larger than
/// this alone goes alone).
pub const BATCH_BYTES_MAX: usize = 4 << 20;

/// What proposes an entry: a chunk's Raft group (or a stand-in in tests).
pub trait Proposer: Clone + Send + Sync + 'static {
    /// Replicates `command` and returns the replica's reply once it is
    /// committed and applied here (as [`Group::propose`]).
    fn propose(&self, command: Vec<u8>) -> BoxedFuture<Result<Vec<u8>, ConsensusError>>;
}

impl Proposer for Group {
    fn propose(&self, command: Vec<u8>) -> BoxedFuture<Result<Vec<u8>, ConsensusError>> {
        let group = self.clone();
        Box::pin(async move { Group::propose(&group, command).await })
    }
}

type Outcome = Result<ChunkReply, ConsensusError>;

struct Waiting {
    ops: Vec<WriteOp>,
    /// The leader term the write was computed in, if it was (see
    /// [`ChunkCommand::Fenced`]).
    term: Option<u64>,
    bytes: usize,
    queued: std::time::Instant,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Waiting>,
    in_flight: usize,
}

/// The write batcher of one chunk; see the module docs. Clones share it.
#[derive(Clone, Default)]
pub struct WriteBatcher {
    state: Arc<Mutex<State>>,
}

fn op_bytes(ops: &[WriteOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            WriteOp::Put { key, value } => key.len() + value.len(),
            WriteOp::Delete { key } => key.len(),
        })
        .sum()
}

/// Counts a driver out when it ends otherwise than by finding the queue
/// empty (a panic, its runtime shutting down), so that later writes start
/// a new one.
struct InFlight {
    state: Arc<Mutex<State>>,
    armed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.state).in_flight -= 1;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every edit is a push, a take or a count: a poisoned lock is still
    // consistent.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteBatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Proposes `ops` (one atomic write, every key inside the chunk, checked
    /// against the row limits) through `proposer`, alone or in one entry
    /// with other writes; returns this write's own reply once its entry is
    /// committed and applied here.
    ///
    /// A write computed by the leader in `term` (from what it read) is
    /// applied only if its entry is appended in that term; otherwise it is
    /// answered `StaleTerm` and changes nothing.
    ///
    /// Errors: the [`ConsensusError`] of the entry's proposal (the write
    /// may then have been applied, except with `NotLeader` before
    /// anything was proposed, which the caller tells apart as it does for
    /// [`Group::propose`]).
    pub async fn write<P: Proposer>(
        &self,
        proposer: &P,
        ops: Vec<WriteOp>,
        term: Option<u64>,
    ) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let bytes = op_bytes(&ops);
        let start = {
            let mut s = lock(&self.state);
            let queued = std::time::Instant::now();
            s.queue.push_back(Waiting { ops, term, bytes, queued, reply: tx });
            let start = s.in_flight < IN_FLIGHT_MAX;
            if start {
                s.in_flight += 1;
            }
            start
        };
        if start {
            let guard = InFlight { state: self.state.clone(), armed: true };
            tokio::spawn(drive(guard, proposer.clone()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ConsensusError::Fatal("the write's proposal was dropped (stopping)".into()))
        })
    }

    /// Writes queued and entries in flight (for tests).
    #[cfg(test)]
    fn load(&self) -> (usize, usize) {
        let s = lock(&self.state);
        (s.queue.len(), s.in_flight)
    }
}

/// Proposes the queued writes, an entry at a time, until none is queued.
async fn drive<P: Proposer>(mut in_flight: InFlight, proposer: P) {
    let state = in_flight.state.clone();
    loop {
        let batch = {
            let mut s = lock(&state);
            let mut batch: Vec<Waiting> = Vec::new();
            let mut bytes = 0;
            while let Some(next) = s.queue.front() {
                if !batch.is_empty()
                    && (batch.len() == BATCH_WRITES_MAX || bytes + next.bytes > BATCH_BYTES_MAX)
                {
                    break;
                }
                bytes += next.bytes;
                batch.push(s.queue.pop_front().expect("front exists"));
            }
            if batch.is_empty() {
                // Counted out under the same lock a writer checks the
                // count under: a write queued after this starts a driver.
                s.in_flight -= 1;
                in_flight.armed = false;
                return;
            }
            batch
        };
        let (started, writes) = (std::time::Instant::now(), batch.len());
        let waited = started.duration_since(batch[0].queued).as_micros() as u64;
        propose(&proposer, batch).await;
        tracing::debug!(target: crate::consensus::TIMING, stage = "batch", writes, waited_us = waited, us = started.elapsed().as_micros() as u64);
    }
}

/// Proposes `batch` as one entry and answers each of its writers.
async fn propose<P: Proposer>(proposer: &P, mut batch: Vec<Waiting>) {
    let fenced = batch.iter().any(|w| w.term.is_some());
    if batch.len() == 1 && !fenced {
        let w = batch.pop().expect("one write");
        let command = encode_command(&ChunkCommand::Write { ops: w.ops });
        let outcome = proposer.propose(command).await.map(|bytes| decode_reply(&bytes));
        let _ = w.reply.send(outcome);
        return;
    }
    let n = batch.len();
    let mut replies = Vec::with_capacity(n);
    let command = if fenced {
        let writes = batch
            .into_iter()
            .map(|w| {
                replies.push(w.reply);
                (w.term, w.ops)
            })
            .collect();
        encode_command(&ChunkCommand::Fenced { writes })
    } else {
        let writes = batch
            .into_iter()
            .map(|w| {
                replies.push(w.reply);
                w.ops
            })
            .collect();
        encode_command(&ChunkCommand::Writes { writes })
    };
    match proposer.propose(command).await {
        Ok(bytes) => {
            let answers = decode_replies(&bytes).and_then(|answers| {
                if answers.len() == n {
                    Ok(answers)
                } else {
                    Err(ErrorInfo {
                        code: ErrorCode::Internal,
                        message: format!("{} replies to a batch of {n} writes", answers.len()),
                    })
                }
            });
            match answers {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(info) => {
                    for reply in replies {
                        let _ = reply.send(Ok(Err(info.clone())));
                    }
                }
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use monotable_proto::CommitToken;

    use super::*;
    use crate::replica::encode_replies;

    /// Applies entries to a list of keys: a write whose first key is
    /// "bad" is refused; answers carry the write's position in the log as
    /// the token's seq. `gate`: proposals wait for it, so tests can pile
    /// writes up behind the entries in flight.
    #[derive(Clone)]
    struct Fake {
        log: Arc<Mutex<Vec<Vec<u8>>>>,
        entries: Arc<Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
        fail: Arc<Mutex<Option<ConsensusError>>>,
        proposals: Arc<AtomicUsize>,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                log: Arc::default(),
                entries: Arc::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(0)),
                fail: Arc::default(),
                proposals: Arc::default(),
            }
        }
    }

    impl Fake {
        fn apply(&self, ops: &[WriteOp]) -> ChunkReply {
            let key = ops[0].key().to_vec();
            if key == b"bad" {
                return Err(ErrorInfo { code: ErrorCode::ValueTooLarge, message: "bad".into() });
            }
            let mut log = self.log.lock().expect("lock");
            log.push(key);
            Ok(CommitToken { chunk: 1, seq: log.len() as u64 })
        }
    }

    impl Proposer for Fake {
        fn propose(&self, command: Vec<u8>) -> BoxedFuture<Result<Vec<u8>, ConsensusError>> {
            let fake = self.clone();
            Box::pin(async move {
                fake.proposals.fetch_add(1, Ordering::SeqCst);
                fake.gate.acquire().await.expect("gate").forget();
                if let Some(e) = fake.fail.lock().expect("lock").take() {
                    return Err(e);
                }
                let command: ChunkCommand = rmp_serde::from_slice(&command).expect("command");
                Ok(match command {
                    ChunkCommand::Write { ops } => {
                        fake.entries.lock().expect("lock").push(1);
                        rmp_serde::to_vec(&fake.apply(&ops)).expect("encodes")
                    }
                    ChunkCommand::Writes { writes } => {
                        fake.entries.lock().expect("lock").push(writes.len());
                        encode_replies(&writes.iter().map(|w| fake.apply(w)).collect::<Vec<_>>())
                    }
                    other => panic!("unexpected {other:?}"),
                })
            })
        }
    }

    fn put(k: &str) -> Vec<WriteOp> {
        vec![WriteOp::Put { key: k.as_bytes().to_vec().into(), value: b"v".to_vec().into() }]
    }

    /// Starts `keys` as writes, each on its own task, once `IN_FLIGHT_MAX`
    /// single writes are in flight (held by the fake's gate).
    async fn pile_up(
        batcher: &WriteBatcher,
        fake: &Fake,
        keys: &[&str],
    ) -> (Vec<tokio::task::JoinHandle<Outcome>>, Vec<tokio::task::JoinHandle<Outcome>>) {
        let mut first = Vec::new();
        for i in 0..IN_FLIGHT_MAX {
            let (b, f, k) = (batcher.clone(), fake.clone(), format!("first{i}"));
            first.push(tokio::spawn(async move { b.write(&f, put(&k), None).await }));
            while fake.proposals.load(Ordering::SeqCst) <= i {
                tokio::task::yield_now().await;
            }
        }
        let mut rest = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (b, f, k) = (batcher.clone(), fake.clone(), k.to_string());
            rest.push(tokio::spawn(async move { b.write(&f, put(&k), None).await }));
            while batcher.load().0 <= i {
                tokio::task::yield_now().await;
            }
        }
        (first, rest)
    }

    #[tokio::test]
    async fn writes_queued_behind_entries_in_flight_go_as_one_entry_each_answered() {
        let (batcher, fake) = (WriteBatcher::new(), Fake::default());
        let (first, rest) = pile_up(&batcher, &fake, &["a", "b", "c", "d"]).await;
        assert_eq!(batcher.load(), (4, IN_FLIGHT_MAX));
        fake.gate.add_permits(100);
        for h in first {
            h.await.expect("task").expect("proposed").expect("applied");
        }
        let mut seqs = Vec::new();
        for h in rest {
            seqs.push(h.await.expect("task").expect("proposed").expect("applied").seq);
        }
        // Applied in arrival order, each writer told its own position.
        let log = fake.log.lock().expect("lock").clone();
        let at = |k: &str| log.iter().position(|x| x == k.as_bytes()).expect("applied") as u64 + 1;
        assert_eq!(seqs, vec![at("a"), at("b"), at("c"), at("d")]);
        assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "{seqs:?}");
        // The four queued writes went as one entry.
        let entries = fake.entries.lock().expect("lock").clone();
        assert!(entries.contains(&4), "{entries:?}");
        assert_eq!(batcher.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_refused_write_does_not_fail_its_batch_mates() {
        let (batcher, fake) = (WriteBatcher::new(), Fake::default());
        let (first, rest) = pile_up(&batcher, &fake, &["a", "bad", "c"]).await;
        fake.gate.add_permits(100);
        for h in first {
            h.await.expect("task").expect("proposed").expect("applied");
        }
        let out: Vec<ChunkReply> = {
            let mut v = Vec::new();
            for h in rest {
                v.push(h.await.expect("task").expect("proposed"));
            }
            v
        };
        assert!(out[0].is_ok());
        assert_eq!(out[1].as_ref().expect_err("refused").code, ErrorCode::ValueTooLarge);
        assert!(out[2].is_ok());
        assert!(fake.entries.lock().expect("lock").contains(&3));
    }

    #[tokio::test]
    async fn a_failed_proposal_fails_every_write_in_it_and_the_next_entry_goes_on() {
        let (batcher, fake) = (WriteBatcher::new(), Fake::default());
        let (first, rest) = pile_up(&batcher, &fake, &["a", "b"]).await;
        // The entries in flight succeed; the batch of "a" and "b" fails.
        fake.gate.add_permits(IN_FLIGHT_MAX);
        for h in first {
            h.await.expect("task").expect("proposed").expect("applied");
        }
        *fake.fail.lock().expect("lock") = Some(ConsensusError::Timeout(5));
        fake.gate.add_permits(100);
        for h in rest {
            assert_eq!(h.await.expect("task"), Err(ConsensusError::Timeout(5)));
        }
        // Nothing of it applied; the batcher takes writes again.
        assert!(fake.log.lock().expect("lock").iter().all(|k| k != b"a" && k != b"b"));
        assert_eq!(
            batcher.write(&fake, put("e"), None).await.expect("proposed").expect("applied").seq,
            3
        );
        assert_eq!(batcher.load(), (0, 0));
    }

    #[tokio::test]
    async fn batches_are_bounded() {
        let (batcher, fake) = (WriteBatcher::new(), Fake::default());
        let keys: Vec<String> = (0..BATCH_WRITES_MAX + 5).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (first, rest) = pile_up(&batcher, &fake, &refs).await;
        fake.gate.add_permits(10_000);
        for h in first.into_iter().chain(rest) {
            h.await.expect("task").expect("proposed").expect("applied");
        }
        let entries = fake.entries.lock().expect("lock").clone();
        assert!(entries.iter().all(|&n| n <= BATCH_WRITES_MAX), "{entries:?}");
        assert_eq!(entries.iter().sum::<usize>(), BATCH_WRITES_MAX + 5 + IN_FLIGHT_MAX);
        assert_eq!(op_bytes(&put("ab")), 3);
    }
}
