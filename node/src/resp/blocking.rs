//! Blocking pops: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
//! BZPOPMAX, BZMPOP, with Redis 7.0's replies, errors and timeouts
//! (seconds, fractions allowed, 0 for ever).
//!
//! A blocking command first runs as its non-blocking form. If every key it
//! waits on is empty (missing), it does not reply: it records a [`Block`] on
//! the connection, and the connection ([`super::server`]) waits, reading
//! nothing more of its pipeline, until a key it waits on is written, its
//! timeout passes (the reply is then a null), or the client goes away.
//!
//! Wake-ups: every writer of a key takes its stripe through
//! [`super::state::RespState::lock`], which [`Waiters::signal`]s the key:
//! the first connection waiting on it (in the order they blocked) runs its
//! command again once it can take the stripe, so after the writer's burst
//! (or EXEC) is applied. One that gets an element signals the key again,
//! for the next in line; one that finds nothing (another client took it)
//! waits on, keeping its place. A pop that runs again takes its stripes
//! without signalling ([`super::state::RespState::lock_as_waiter`]).
//!
//! Inside MULTI (and when EXEC runs the queue) a blocking command behaves
//! as its non-blocking form, as in Redis: a null when everything is empty.
//! On a replicated database the command runs on the chunk's leader, as the
//! non-blocking form; the connection's node runs it again every
//! [`POLL_INTERVAL_MS`] until it gets an element or its timeout passes.
//!
//! The client whose write woke blocked clients gets its reply once they
//! have run their command again (each after the clients it woke in turn),
//! as Redis serves blocked clients before it replies to the command that
//! served them: after an RPUSH's reply, a BRPOPLPUSH it woke has moved the
//! element ([`Wake`], [`served`]). Waiting for them is bounded by
//! [`SERVED_WAIT_MAX_MS`].
//!
//! Differences from Redis: a client that is not blocked may take a pushed
//! element before the blocked client that was first in line (Redis serves
//! blocked clients before running the next command), and a pipelined
//! command after the write may run before them (they are waited for once
//! per batch of the pipeline); on a replicated database, clients blocked
//! on one key are not served in the order they blocked.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::errors::SYNTAX;
use super::keyspace::Db;
use super::reply::Reply;
use super::state::{Conn, RespState};
use crate::error::NodeResult;

/// How often a command blocked on a replicated database runs again.
pub const POLL_INTERVAL_MS: u64 = 100;

/// How long a client waits, before it replies, for the blocked clients its
/// writes woke to run again (a bound for a stalled one; they take far less).
pub const SERVED_WAIT_MAX_MS: u64 = 1_000;

/// A blocked connection's wake-up: the notification, and one
/// acknowledgement per wake-up given, dropped (so answered) once the
/// connection has run its command again.
#[derive(Default)]
pub struct Wake {
    pub notify: Notify,
    acks: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Wake {
    /// The acknowledgements of the wake-ups given so far: dropping them
    /// tells their givers this connection has run again.
    pub fn take_acks(&self) -> Vec<tokio::sync::oneshot::Sender<()>> {
        std::mem::take(&mut *self.acks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wakes the connection; the giver (this task, if it runs commands of
    /// a client) waits for it in [`served`].
    fn wake(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        let _ = WOKEN.try_with(|w| w.borrow_mut().push(rx));
        self.notify.notify_one();
    }
}

tokio::task_local! {
    /// The wake-ups a client's commands gave, not yet waited for.
    static WOKEN: std::cell::RefCell<Vec<tokio::sync::oneshot::Receiver<()>>>;
}

/// Runs `f` (a connection's whole life) so that the wake-ups its commands
/// give can be waited for ([`served`]).
pub async fn recording_wakes<F: std::future::Future>(f: F) -> F::Output {
    WOKEN.scope(std::cell::RefCell::new(Vec::new()), f).await
}

/// Waits (at most [`SERVED_WAIT_MAX_MS`]) until the clients this task's
/// commands woke have run again. Call it holding no stripe nor the gate.
pub async fn served() {
    let woken = WOKEN.try_with(|w| std::mem::take(&mut *w.borrow_mut())).unwrap_or_default();
    if woken.is_empty() {
        return;
    }
    let all = async {
        for rx in woken {
            let _ = rx.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(SERVED_WAIT_MAX_MS), all).await;
}

/// The clients waiting on one key, in the order they blocked: (client id,
/// its wake-up).
type Line = VecDeque<(u64, Arc<Wake>)>;

/// Lines by database and key.
type Lines = HashMap<u32, HashMap<Vec<u8>, Line>>;

/// Connections waiting on keys, by database and key, in the order they
/// blocked.
#[derive(Default)]
pub struct Waiters {
    queues: Mutex<Lines>,
    /// Connections waiting now (so a write with none waiting costs one
    /// atomic load).
    waiting: AtomicUsize,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts client `id` at the end of the line of each of `keys`.
    pub fn register(&self, db: u32, keys: &[Vec<u8>], id: u64, wake: &Arc<Wake>) {
        let mut queues = self.lock();
        let per_db = queues.entry(db).or_default();
        for k in keys {
            per_db.entry(k.clone()).or_default().push_back((id, wake.clone()));
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes client `id` out of the lines of `keys`.
    pub fn unregister(&self, db: u32, keys: &[Vec<u8>], id: u64) {
        let mut queues = self.lock();
        if let Some(per_db) = queues.get_mut(&db) {
            for k in keys {
                if let Some(line) = per_db.get_mut(k.as_slice()) {
                    line.retain(|(c, _)| *c != id);
                    if line.is_empty() {
                        per_db.remove(k.as_slice());
                    }
                }
            }
            if per_db.is_empty() {
                queues.remove(&db);
            }
        }
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// `key` of database `db` got entries every reader may want (XADD):
    /// wakes every client waiting on it.
    pub fn signal_all(&self, db: u32, key: &[u8]) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let queues = self.lock();
        for (_, wake) in queues.get(&db).and_then(|d| d.get(key)).into_iter().flatten() {
            wake.wake();
        }
    }

    /// Every key of database `db` may have changed (FLUSHDB, FLUSHALL):
    /// wakes every client waiting on one, each to find what its key holds.
    pub fn signal_database(&self, db: u32) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let queues = self.lock();
        for line in queues.get(&db).into_iter().flat_map(|d| d.values()) {
            for (_, wake) in line {
                wake.wake();
            }
        }
    }

    /// `key` of database `db` may have changed: wakes the first client
    /// waiting on it.
    pub fn signal(&self, db: u32, key: &[u8]) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let queues = self.lock();
        if let Some(first) = queues.get(&db).and_then(|d| d.get(key)).and_then(|l| l.front()) {
            first.1.wake();
        }
    }
}

/// A command waiting for one of its keys to be written.
#[derive(Debug, Clone)]
pub struct Block {
    pub db: u32,
    /// The keys it waits on.
    pub keys: Vec<Vec<u8>>,
    /// When it gives up (`None`: never).
    pub deadline: Option<Instant>,
    /// The command, to run again.
    pub args: Vec<Vec<u8>>,
    /// Run again every [`POLL_INTERVAL_MS`] (a replicated database) rather
    /// than on a signal.
    pub poll: bool,
}

impl Block {
    /// What a blocked command answers when its timeout passes: a null
    /// array, for every one of them (also BLMOVE, as Redis does).
    pub fn timed_out(&self) -> Reply {
        Reply::NullArray
    }
}

/// A blocking command's timeout argument, as Redis reads it: seconds,
/// fractions allowed, read as a long double and rounded up to whole
/// milliseconds (`node/csrc/long_double.c`); `None` for 0 (for ever).
fn timeout(arg: &[u8]) -> Result<Option<Duration>, Reply> {
    let mut ms: std::os::raw::c_longlong = 0;
    // SAFETY: the C side reads `arg.len()` bytes and writes one integer.
    let ok = unsafe { mt_timeout_ms(arg.as_ptr().cast(), arg.len(), &mut ms) };
    if ok != 1 {
        return Err(Reply::err("ERR timeout is not a float or out of range"));
    }
    if ms < 0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
}

extern "C" {
    fn mt_timeout_ms(
        s: *const std::os::raw::c_char,
        len: usize,
        ms: *mut std::os::raw::c_longlong,
    ) -> std::os::raw::c_int;
}

/// What a blocking command asks for.
struct Ask {
    /// Keys it waits on.
    waits: Vec<Vec<u8>>,
    /// Keys it writes (stripes to take).
    writes: Vec<Vec<u8>>,
    timeout: Option<Duration>,
    /// The reply when everything is empty and it may not block (inside a
    /// transaction): LMOVE's null for the moves, a null array for the pops.
    empty: Reply,
    op: Op,
}

enum Op {
    /// BLPOP / BRPOP: one element from the first non-empty list.
    Pop { head: bool },
    /// BLMOVE / BRPOPLPUSH.
    Move { from_head: bool, to_head: bool },
    /// BLMPOP.
    MPop { head: bool, count: i64 },
    /// BZPOPMIN / BZPOPMAX: the lowest (highest) member of the first
    /// non-empty sorted set.
    ZPop { max: bool },
    /// BZMPOP.
    ZMPop { max: bool, count: u64 },
}

impl Op {
    /// The type of the keys it pops from.
    fn kind(&self) -> u8 {
        match self {
            Op::ZPop { .. } | Op::ZMPop { .. } => super::keyspace::KIND_ZSET,
            _ => super::keyspace::KIND_LIST,
        }
    }
}

/// Parses `args` as Redis does, errors first (arguments, then timeout, in
/// Redis's order per command).
fn ask(name: &str, args: &[Vec<u8>]) -> Result<Ask, Reply> {
    let last = args.len() - 1;
    match name {
        "blpop" | "brpop" => Ok(Ask {
            waits: args[1..last].to_vec(),
            writes: args[1..last].to_vec(),
            timeout: timeout(&args[last])?,
            empty: Reply::NullArray,
            op: Op::Pop { head: name == "blpop" },
        }),
        "brpoplpush" => Ok(Ask {
            waits: vec![args[1].clone()],
            writes: vec![args[1].clone(), args[2].clone()],
            timeout: timeout(&args[3])?,
            empty: Reply::Null,
            op: Op::Move { from_head: false, to_head: true },
        }),
        "blmove" => {
            let from_head = super::lists::end(&args[3])?;
            let to_head = super::lists::end(&args[4])?;
            Ok(Ask {
                waits: vec![args[1].clone()],
                writes: vec![args[1].clone(), args[2].clone()],
                timeout: timeout(&args[5])?,
                empty: Reply::Null,
                op: Op::Move { from_head, to_head },
            })
        }
        "blmpop" => {
            let timeout = timeout(&args[1])?;
            // LMPOP's arguments after the timeout.
            let rest: Vec<Vec<u8>> =
                std::iter::once(args[0].clone()).chain(args[2..].iter().cloned()).collect();
            let keys = super::lists::mpop_keys(&rest)?;
            let (head, count) = super::lists::mpop_options(&rest, &keys)?;
            Ok(Ask {
                waits: keys.clone(),
                writes: keys,
                timeout,
                empty: Reply::NullArray,
                op: Op::MPop { head, count },
            })
        }
        "bzpopmin" | "bzpopmax" => Ok(Ask {
            waits: args[1..last].to_vec(),
            writes: args[1..last].to_vec(),
            timeout: timeout(&args[last])?,
            empty: Reply::NullArray,
            op: Op::ZPop { max: name == "bzpopmax" },
        }),
        "bzmpop" => {
            let timeout = timeout(&args[1])?;
            // ZMPOP's arguments after the timeout.
            let rest: Vec<Vec<u8>> =
                std::iter::once(args[0].clone()).chain(args[2..].iter().cloned()).collect();
            let keys = super::lists::mpop_keys(&rest)?;
            let (max, count) = super::zset_algebra::zmpop_options(&rest, &keys)?;
            Ok(Ask {
                waits: keys.clone(),
                writes: keys,
                timeout,
                empty: Reply::NullArray,
                op: Op::ZMPop { max, count },
            })
        }
        _ => Err(Reply::err(SYNTAX)),
    }
}

/// Runs a blocking command on `db` (its arity checked): its reply, or, with
/// every key empty outside a transaction, a [`Block`] recorded on `conn`
/// (the reply returned is then the timeout's, not to be sent yet).
pub async fn run(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let mut ask = match ask(name, args) {
        Ok(ask) => ask,
        Err(reply) => return Ok(reply),
    };
    let dbi = conn.db;
    let keys: Vec<&[u8]> = ask.writes.iter().map(Vec::as_slice).collect();
    let got = {
        let _g = state.lock_as_waiter(dbi, &keys, &[]).await;
        // Woken after its client was killed or unblocked: it takes
        // nothing, and its wait ends so.
        if conn.retrying && conn.info.leaving() {
            of_kind_missing(conn, &ask, args);
            return Ok(ask.empty);
        }
        // Woken, it is served only from keys of its type: one that came to
        // hold another type is passed over (its destination's type is still
        // checked, with WRONGTYPE, as in Redis).
        // Postmortem: a key turned into a string answered its waiter with
        // WRONGTYPE at once.
        if conn.retrying {
            let kind = ask.op.kind();
            let mut of_kind = Vec::with_capacity(ask.waits.len());
            for k in std::mem::take(&mut ask.waits) {
                if db.get(&k).await?.is_none_or(|v| v.kind == kind) {
                    of_kind.push(k);
                }
            }
            if of_kind.is_empty() {
                of_kind_missing(conn, &ask, args);
                return Ok(ask.empty);
            }
            ask.waits = of_kind;
        }
        match ask.op {
            Op::Pop { head } => super::lists::pop_first(db, &ask.waits, head, 1).await?.map(|p| {
                p.map(|(key, mut e)| {
                    Reply::Array(vec![Reply::Bulk(key), Reply::Bulk(e.pop().unwrap_or_default())])
                })
            }),
            Op::Move { from_head, to_head } => {
                super::lists::move_one(db, &args[1], &args[2], from_head, to_head)
                    .await?
                    .map(|e| e.map(Reply::Bulk))
            }
            Op::MPop { head, count } => {
                super::lists::pop_first(db, &ask.waits, head, count).await?.map(|p| {
                    p.map(|(key, e)| {
                        Reply::Array(vec![
                            Reply::Bulk(key),
                            Reply::Array(e.into_iter().map(Reply::Bulk).collect()),
                        ])
                    })
                })
            }
            Op::ZPop { max } => {
                super::zset_algebra::pop_first(db, &ask.waits, max, 1).await?.map(|p| {
                    p.map(|(key, mut items)| {
                        let (member, score) = items.pop().unwrap_or_default();
                        Reply::Array(vec![
                            Reply::Bulk(key),
                            Reply::Bulk(member),
                            Reply::Double(score),
                        ])
                    })
                })
            }
            Op::ZMPop { max, count } => {
                super::zset_algebra::pop_first(db, &ask.waits, max, count).await?.map(|p| {
                    p.map(|(key, items)| {
                        Reply::Array(vec![
                            Reply::Bulk(key),
                            super::zsets::with_scores(items, true, 3),
                        ])
                    })
                })
            }
        }
    };
    match got {
        Err(reply) => Ok(reply),
        Ok(Some(reply)) => {
            // More may be left for the next in line, and a move's
            // destination was written.
            // Postmortem: only the source was signalled, so a client
            // blocked on a BLMOVE's destination waited for ever.
            for k in &ask.writes {
                state.blocking.signal(dbi, k);
            }
            Ok(reply)
        }
        Ok(None) if db.tx.is_some() => Ok(ask.empty),
        Ok(None) => {
            of_kind_missing(conn, &ask, args);
            Ok(ask.empty)
        }
    }
}

/// Nothing of the command's type was found: it blocks (again) on the keys
/// it waits on.
fn of_kind_missing(conn: &mut Conn, ask: &Ask, args: &[Vec<u8>]) {
    conn.block = Some(Block {
        db: conn.db,
        keys: ask.waits.clone(),
        deadline: ask.timeout.map(|t| Instant::now() + t),
        args: args.to_vec(),
        poll: false,
    });
}

/// For a blocking command that ran on a replicated database's leader and
/// found nothing (`reply`, as that node encoded it, is a null): the
/// [`Block`] that makes this connection run it again until its timeout.
pub fn poll_block(conn: &Conn, name: &str, args: &[Vec<u8>], reply: &Reply) -> Option<Block> {
    let Reply::Raw(bytes) = reply else { return None };
    if !matches!(bytes.as_slice(), b"*-1\r\n" | b"$-1\r\n" | b"_\r\n") {
        return None;
    }
    if name == "xread" || name == "xreadgroup" {
        let r = super::stream_commands::read_args(args, name == "xreadgroup", false).ok()?;
        let ms = r.block?;
        return Some(Block {
            db: conn.db,
            keys: r.keys,
            deadline: (ms > 0).then(|| Instant::now() + Duration::from_millis(ms)),
            args: args.to_vec(),
            poll: true,
        });
    }
    let ask = ask(name, args).ok()?;
    Some(Block {
        db: conn.db,
        keys: ask.waits,
        deadline: ask.timeout.map(|t| Instant::now() + t),
        args: args.to_vec(),
        poll: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_redis_reads_them() {
        assert_eq!(timeout(b"0"), Ok(None));
        assert_eq!(timeout(b"0.0001"), Ok(Some(Duration::from_millis(1))), "rounded up");
        assert_eq!(timeout(b"1.5"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(timeout(b"-1"), Err(Reply::err("ERR timeout is negative")));
        let bad = Reply::err("ERR timeout is not a float or out of range");
        assert_eq!(timeout(b"x"), Err(bad.clone()));
        assert_eq!(timeout(b""), Err(bad));
        // Past the range of a long long, Redis's conversion goes negative.
        // Postmortem: "timeout is out of range", a text Redis never sends.
        assert_eq!(timeout(b"inf"), Err(Reply::err("ERR timeout is negative")));
        assert_eq!(timeout(b"1e400"), Err(Reply::err("ERR timeout is negative")));
    }

    #[tokio::test]
    async fn the_first_to_block_is_woken_first_and_leaving_frees_the_line() {
        let w = Waiters::default();
        let (a, b) = (Arc::new(Wake::default()), Arc::new(Wake::default()));
        w.register(0, &[b"k".to_vec()], 1, &a);
        w.register(0, &[b"k".to_vec(), b"j".to_vec()], 2, &b);
        w.signal(0, b"k");
        tokio::time::timeout(Duration::from_secs(1), a.notify.notified()).await.expect("a woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.notify.notified()).await.is_err(),
            "b still waits"
        );
        w.unregister(0, &[b"k".to_vec()], 1);
        w.signal(0, b"k");
        tokio::time::timeout(Duration::from_secs(1), b.notify.notified()).await.expect("b woken");
        w.signal(0, b"j");
        w.unregister(0, &[b"k".to_vec(), b"j".to_vec()], 2);
        assert!(w.lock().is_empty() && w.waiting.load(Ordering::Acquire) == 0);
        w.signal(1, b"k");
    }

    #[tokio::test]
    async fn a_writer_waits_until_the_clients_it_woke_have_run() {
        recording_wakes(async {
            let w = Waiters::default();
            let wake = Arc::new(Wake::default());
            w.register(0, &[b"k".to_vec()], 1, &wake);
            w.signal(0, b"k");
            let acks = wake.take_acks();
            assert_eq!(acks.len(), 1);
            let started = std::time::Instant::now();
            let answer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(acks);
            });
            served().await;
            assert!(started.elapsed() >= Duration::from_millis(100), "waited for the ack");
            answer.await.expect("answered");
            // Nothing woken: no wait.
            served().await;
        })
        .await;
    }
}
