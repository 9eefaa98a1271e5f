//! The dispatcher: looks a command up in [`super::table`], checks its
//! arity and the connection's AUTH, queues it inside MULTI, decides where
//! it runs (this node, or a replicated database's leader: [`super::cluster`])
//! and runs it through its row's [`Handler`], with one match. It also runs
//! MULTI/EXEC/DISCARD/WATCH/UNWATCH itself.
//!
//! The command modules sit below it: they take their state from
//! [`super::state`], their shared errors from [`super::errors`] and their
//! argument parsing from [`super::args`], never from here.

use std::net::IpAddr;

use super::args::lower;
use super::cluster::Placement;
use super::errors::{internal, unknown_command, unknown_subcommand, NOAUTH};
use super::keyspace::Db;
use super::reply::Reply;
use super::state::{Conn, RespState, MULTI_QUEUE_MAX_BYTES};
use super::table::{Command, Flag, Handler, SubcommandError};
use super::watches::Watched;
use crate::error::NodeError;

/// The command `args` names, once its arity (and its subcommand's) is
/// checked; otherwise the error reply (unknown command or subcommand,
/// wrong number of arguments).
pub(super) fn checked_command(args: &[Vec<u8>]) -> Result<&'static Command, Reply> {
    checked(super::table::lookup(&lower(&args[0])), args)
}

/// `found` (the table's row for `args[0]`, if any), once `args` fit its
/// arity; otherwise the error reply.
fn checked(found: Option<&'static Command>, args: &[Vec<u8>]) -> Result<&'static Command, Reply> {
    let Some(command) = found else { return Err(unknown_command(args)) };
    if !command.arity_fits(args.len()) {
        return Err(Reply::wrong_arity(command.name));
    }
    match super::table::checked_subcommand(command, args) {
        Ok(_) => Ok(command),
        Err(SubcommandError::Unknown) => Err(unknown_subcommand(&args[0], &args[1])),
        Err(SubcommandError::Arity(name)) => Err(Reply::wrong_arity(name)),
    }
}

/// Runs one command (or queues it, inside MULTI). Its writes are applied
/// on return; the reply may be sent once the returned acknowledgements have
/// come and the stable seq has passed what the command read (the caller
/// waits, once for a whole pipeline).
pub async fn execute(
    state: &RespState,
    conn: &mut Conn,
    args: &[Vec<u8>],
) -> (Reply, super::keyspace::Durability) {
    let found = super::table::lookup(&lower(&args[0]));
    if !conn.authenticated && !found.is_some_and(|c| c.has(Flag::NoAuth)) {
        // Redis reports an unknown command or a wrong arity first (but
        // not for MULTI and the like).
        let reply = match checked(found, args) {
            Err(reply) if !found.is_some_and(|c| c.handler == Handler::Transaction) => reply,
            _ => Reply::err(NOAUTH),
        };
        return (reply, Vec::new());
    }
    super::stats::begin(state, conn, found, args).await;
    let checked = checked(found, args);
    // Set for a command that may run while a script is busy.
    let mut allow_busy = false;
    if let Ok(command) = checked {
        // Before MULTI queues it, as Redis's processCommand checks.
        let run = super::table::checked_subcommand(command, args).ok().flatten();
        if let Err(denied) = state.acl_check(conn, run.unwrap_or(command), args) {
            let text = denied.message(run.unwrap_or(command).name);
            return (reject(conn, command.name, &text), Vec::new());
        }
        let denyoom = flagged(command, run, Flag::Denyoom);
        if refused_when_out_of_memory(conn, command.name, denyoom) && state.memory.over() {
            return (reject(conn, command.name, super::maxmemory::OOM), Vec::new());
        }
        allow_busy = flagged(command, run, Flag::AllowBusy);
        if !allow_busy {
            if let Some(busy) = state.scripts.busy.busy_error() {
                return (reject(conn, command.name, busy), Vec::new());
            }
        }
    }
    if let Some(command) = found.filter(|c| c.handler == Handler::Transaction) {
        return (transaction(state, conn, command, args).await, Vec::new());
    }
    let command = match checked {
        Ok(command) => command,
        Err(reply) => {
            if conn.multi.is_some() {
                conn.multi_failed = true;
            }
            return (reply, Vec::new());
        }
    };
    let name = command.name;
    // The monitor test first: the flags are looked at only for a monitor.
    let keyspace =
        || command.has(Flag::Write) || command.has(Flag::Readonly) || command.may_replicate();
    if conn.subs.as_ref().is_some_and(|s| s.is_monitor()) && keyspace() {
        super::stats::refused(conn);
        return (Reply::err("ERR Replica can't interact with the keyspace"), Vec::new());
    }
    if conn.in_subscribed_context() && !super::pubsub::allowed_when_subscribed(name) {
        super::stats::refused(conn);
        let message = format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
             RESET are allowed in this context"
        );
        return (Reply::err(message), Vec::new());
    }
    if let Some(queue) = &mut conn.multi {
        if super::pubsub::subscribes(name) {
            // EXEC runs its commands for the transaction, not on the
            // connection: a subscription made there would go nowhere.
            conn.multi_failed = true;
            let message = format!("ERR {} is not allowed inside MULTI", name.to_uppercase());
            return (Reply::err(message), Vec::new());
        }
        if command.has(Flag::NoMulti) {
            conn.multi_failed = true;
            return (Reply::err("ERR Command not allowed inside a transaction"), Vec::new());
        }
        if name != "quit" && name != "reset" {
            let size: usize = args.iter().map(|a| a.len() + 32).sum();
            conn.multi_bytes = conn.multi_bytes.saturating_add(size);
            if conn.multi_bytes > MULTI_QUEUE_MAX_BYTES {
                conn.multi_failed = true;
                let message = format!(
                    "ERR a transaction may queue {MULTI_QUEUE_MAX_BYTES} bytes of commands; EXEC will abort"
                );
                return (Reply::err(message), Vec::new());
            }
            queue.push(args.to_vec());
            return (Reply::Simple("QUEUED"), Vec::new());
        }
    }
    let placement = if command.per_node {
        Placement::Local
    } else {
        super::cluster::placement(&state.node, conn.db)
    };
    if let Placement::Replicated(_) = placement {
        // Runs on the chunk's leader (see `cluster`), which may not have
        // an EVALSHA's script: it gets the body.
        let args = if command.handler == Handler::Scripting {
            match super::scripting::with_body(state, args.to_vec()) {
                Ok(args) => args,
                Err(reply) => return (reply, Vec::new()),
            }
        } else if name == "xread" {
            // Polled until it gets entries: `$` must stay what it was now.
            super::stream_commands::with_last_ids(state, conn.db, args.to_vec()).await
        } else {
            args.to_vec()
        };
        let blocking = command.has(Flag::Blocking).then(|| args.clone());
        let reply = super::cluster::run(state, conn.db, conn.proto, Work::Command(args)).await;
        if let Some(args) = blocking {
            conn.block = super::blocking::poll_block(conn, name, &args, &reply);
        }
        return (reply, Vec::new());
    }
    if command.handler == Handler::Scripting && !command.per_node {
        return (script_alone(state, conn, args.to_vec(), placement).await, Vec::new());
    }
    if command.handler == Handler::Mt {
        // May wait long (a fresh aggregate): nothing of the burst is held
        // meanwhile.
        super::stripes::release_held();
    }
    // FLUSHDB, FLUSHALL and SWAPDB run alone, as EXEC: a database dropped
    // and made again (or swapped) is never seen half done (a woken
    // XREADGROUP found its stream and not its group).
    let (mut shared, mut alone) = (None, None);
    if allow_busy {
        // Touches no key (SCRIPT KILL, AUTH, SHUTDOWN...): runs while a
        // script holds the gate, as Redis runs it while a script is busy.
    } else if matches!(name, "flushdb" | "flushall" | "swapdb") {
        super::stripes::release_held();
        match unless_busy(state, || state.gate.write()).await {
            Ok(gate) => alone = Some(gate),
            Err(busy) => return (reject(conn, name, busy), Vec::new()),
        }
    } else {
        shared = Some(match state.gate.try_read() {
            Ok(gate) => gate,
            Err(_) => {
                // EXEC runs alone and may want a stripe this burst holds.
                super::stripes::release_held();
                match unless_busy(state, || state.gate.read()).await {
                    Ok(gate) => gate,
                    Err(busy) => return (reject(conn, name, busy), Vec::new()),
                }
            }
        });
    }
    let mut db = Db::new(state, conn.db, None);
    db.client = Some(conn.id);
    db.create_local = !matches!(placement, Placement::Unmade);
    let reply = match run(state, conn, &db, command, args).await {
        Ok(reply) => reply,
        Err(e) => internal(e),
    };
    // Postmortem: DEL of several keys, LMOVE (and its blocking forms) and
    // XADD with a trim wrote two or more batches, so a crash between them
    // kept part of the command; every test run now checks it.
    debug_assert!(
        db.batches() <= 1,
        "{} wrote {} batches: a crash could keep part of it",
        command.name,
        db.batches()
    );
    if db.wants_replicated() {
        // The database's first write, on a cluster: nothing was written
        // here; it is created replicated and the command runs there.
        drop((shared.take(), alone.take()));
        super::stripes::release_held();
        let work = Work::Command(args.to_vec());
        return (
            super::cluster::create_and_run(state, conn.db, conn.proto, work).await,
            Vec::new(),
        );
    }
    (reply, db.take_durability())
}

/// Whether `command` or the subcommand `sub` it runs has `flag`.
fn flagged(command: &Command, sub: Option<&Command>, flag: Flag) -> bool {
    command.has(flag) || sub.is_some_and(|s| s.has(flag))
}

/// Waits for `lock` (the gate, for reading or writing) unless a script is
/// or turns busy meanwhile: then the BUSY error, as Redis answers the
/// commands that arrive while a script is busy.
async fn unless_busy<G, F: std::future::Future<Output = G>>(
    state: &RespState,
    lock: impl Fn() -> F,
) -> Result<G, &'static str> {
    loop {
        let turned = state.scripts.busy.turned_busy.notified();
        tokio::pin!(turned);
        turned.as_mut().enable();
        if let Some(busy) = state.scripts.busy.busy_error() {
            return Err(busy);
        }
        tokio::select! {
            gate = lock() => return Ok(gate),
            () = &mut turned => {}
        }
    }
}

/// The reply to command `name`, refused with error `text` before it ran
/// (Redis's `rejectCommand`): a transaction it is queued in will abort;
/// a refused EXEC discards its transaction with `EXECABORT`.
fn reject(conn: &mut Conn, name: &str, text: &str) -> Reply {
    super::stats::refused(conn);
    if name == "exec" && conn.multi.take().is_some() {
        conn.multi_failed = false;
        conn.watched.clear();
        return Reply::err(format!("EXECABORT Transaction discarded because of: {text}"));
    }
    if conn.multi.is_some() {
        conn.multi_failed = true;
    }
    Reply::err(text)
}

/// Whether a command (`name`, `denyoom` its flag) is refused while the
/// node is over `maxmemory`, as Redis's `processCommand` decides: one that
/// may grow the data, anything but EXEC, DISCARD, QUIT and RESET inside
/// MULTI (queuing takes memory), and EXEC of a queue that holds one.
fn refused_when_out_of_memory(conn: &Conn, name: &str, denyoom: bool) -> bool {
    let Some(queue) = &conn.multi else { return denyoom };
    match name {
        "exec" => queue.iter().any(|args| {
            checked_command(args).is_ok_and(|c| {
                let sub = super::table::checked_subcommand(c, args).ok().flatten();
                flagged(c, sub, Flag::Denyoom)
            })
        }),
        "discard" | "quit" | "reset" => false,
        _ => true,
    }
}

/// Whether `args` would run on the leader of the selected database's
/// chunk (a replicated database) if executed now on `conn`: a known
/// command with a valid arity, not per node, outside MULTI, on an
/// authenticated connection. Such commands may run as one
/// [`Work::Pipeline`] when a client pipelines them.
pub fn runs_replicated(state: &RespState, conn: &Conn, args: &[Vec<u8>]) -> bool {
    if !conn.authenticated || conn.multi.is_some() {
        return false;
    }
    match checked_command(args) {
        Ok(command)
            if command.handler != Handler::Transaction
                && command.handler != Handler::Scripting
                && !command.per_node
                && !command.has(Flag::Blocking) =>
        {
            matches!(super::cluster::placement(&state.node, conn.db), Placement::Replicated(_))
        }
        _ => false,
    }
}

/// What runs on the leader of a replicated database's chunk.
#[derive(Debug, Clone)]
pub enum Work {
    /// One command (never a per-node one, nor MULTI and the like).
    Command(Vec<Vec<u8>>),
    /// The commands a MULTI queued, for EXEC.
    Multi(Vec<Vec<Vec<u8>>>),
    /// Commands a client pipelined, one after another (see
    /// [`super::cluster::run_pipeline`]); their replies one after another.
    Pipeline(Vec<Vec<Vec<u8>>>),
    /// One pass of the expirer.
    Expire,
}

impl Work {
    /// Whether it must run with no other command running on the node
    /// meanwhile (the endpoint's gate held for writing): a transaction,
    /// or a script.
    pub fn runs_alone(&self) -> bool {
        match self {
            Work::Multi(_) => true,
            Work::Command(args) => {
                checked_command(args).is_ok_and(|c| c.handler == Handler::Scripting && !c.per_node)
            }
            Work::Pipeline(_) | Work::Expire => false,
        }
    }
}

/// Runs `work` on database `dbi` with every write held back: the reply
/// (in protocol `proto`'s terms, for a connection of its own) and the
/// writes, for the caller to apply as one batch. A command that fails
/// writes nothing; a transaction's commands that fail leave the others'
/// writes, as EXEC does.
///
/// The caller holds the gate (for writing, for `Multi`), and keeps the
/// stripes the commands take (a burst) until the writes are applied.
pub(super) async fn run_held(
    state: &RespState,
    dbi: u32,
    proto: u8,
    work: &Work,
) -> Result<Held, NodeError> {
    let overlay = super::keyspace::Overlay::default();
    let mut conn = Conn::new(0, IpAddr::from([127, 0, 0, 1]), true);
    conn.db = dbi;
    conn.proto = proto;
    let reply = match work {
        Work::Command(args) => {
            let command = match checked_command(args) {
                Ok(command) => command,
                Err(reply) => return Ok(Held::nothing(reply)),
            };
            let db = Db::new(state, dbi, Some(&overlay));
            match run(state, &mut conn, &db, command, args).await {
                Ok(reply) => reply,
                Err(e) => return Ok(Held::nothing(internal(e))),
            }
        }
        Work::Multi(queue) => {
            Reply::Array(run_queue(state, &mut conn, queue, &overlay, false).await)
        }
        Work::Pipeline(queue) => {
            let mut out = Vec::new();
            for reply in run_queue(state, &mut conn, queue, &overlay, false).await {
                reply.write(proto, &mut out);
            }
            Reply::Raw(out)
        }
        Work::Expire => {
            let db = Db::new(state, dbi, Some(&overlay));
            Reply::Int(super::keys::expire_db(state, dbi, &db).await? as i64)
        }
    };
    let events = overlay.take_events();
    let mut by_range = overlay.into_batches().0;
    let range = super::keyspace::range_name(dbi);
    let ops = by_range.remove(&range).unwrap_or_default();
    if !by_range.is_empty() {
        return Ok(Held::nothing(Reply::err(format!(
            "EXECABORT Transaction discarded: its writes span databases other than {dbi}"
        ))));
    }
    Ok(Held { reply, ops, events })
}

/// What [`run_held`] gives back: the reply, the writes to apply as one
/// batch, and the keyspace events to publish once they are applied.
pub(super) struct Held {
    pub reply: Reply,
    pub ops: Vec<monotable_proto::WriteOp>,
    pub events: Vec<super::notify::Event>,
}

impl Held {
    fn nothing(reply: Reply) -> Held {
        Held { reply, ops: Vec::new(), events: Vec::new() }
    }
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
///
/// EXEC runs the queued commands alone (no other command runs meanwhile),
/// their writes held back and visible to the later commands of the
/// transaction, then applies all of them in one atomic batch: a crash
/// leaves all or none. That batch must fall in one chunk of one database;
/// otherwise the transaction is discarded, nothing applied, with an error
/// that says so. On a replicated database EXEC runs on its chunk's leader,
/// the batch one Raft entry, and WATCH fails (see [`super::cluster`]).
async fn transaction(
    state: &RespState,
    conn: &mut Conn,
    command: &Command,
    args: &[Vec<u8>],
) -> Reply {
    if !command.arity_fits(args.len()) {
        return Reply::wrong_arity(command.name);
    }
    match command.name {
        "multi" if conn.multi.is_some() => Reply::err("ERR MULTI calls can not be nested"),
        "multi" => {
            conn.multi = Some(Vec::new());
            conn.multi_bytes = 0;
            Reply::ok()
        }
        "discard" => match conn.multi.take() {
            None => Reply::err("ERR DISCARD without MULTI"),
            Some(_) => {
                conn.multi_failed = false;
                conn.watched.clear();
                Reply::ok()
            }
        },
        "watch" if conn.multi.is_some() => Reply::err("ERR WATCH inside MULTI is not allowed"),
        "watch" => {
            if !matches!(super::cluster::placement(&state.node, conn.db), Placement::Local) {
                return Reply::err(format!(
                    "ERR WATCH is not supported on database {}: it is (or its first write makes \
                     it) a range replicated across the cluster, whose commands run on its \
                     chunk's leader; use MULTI/EXEC without WATCH",
                    conn.db
                ));
            }
            // Alone, as EXEC: a write under way when a key is watched
            // would not count it (see `super::watches`). A burst's
            // stripes go first: a command holding the gate may wait on
            // them.
            super::stripes::release_held();
            let _gate = state.gate.write().await;
            for k in &args[1..] {
                let mut watched = state.watches.watch(conn.db, k, false);
                watched.live = match live_key(state, conn.db, k).await {
                    Ok(live) => live,
                    Err(e) => return internal(e),
                };
                conn.watched.push(watched);
            }
            Reply::ok()
        }
        // Inside MULTI, Redis queues UNWATCH (EXEC unwatches anyway): the
        // watches still decide whether EXEC runs.
        "unwatch" if conn.multi.is_some() => {
            if let Some(queue) = &mut conn.multi {
                queue.push(args.to_vec());
            }
            Reply::Simple("QUEUED")
        }
        "unwatch" => {
            conn.watched.clear();
            Reply::ok()
        }
        _ => {
            let Some(queue) = conn.multi.take() else {
                return Reply::err("ERR EXEC without MULTI");
            };
            let watched = std::mem::take(&mut conn.watched);
            if std::mem::take(&mut conn.multi_failed) {
                return Reply::err("EXECABORT Transaction discarded because of previous errors.");
            }
            super::stripes::release_held();
            let placement = super::cluster::placement(&state.node, conn.db);
            if let Placement::Replicated(_) = placement {
                // An EVALSHA whose script this node does not have either
                // gets its NOSCRIPT from the leader, in EXEC's reply.
                let queue = queue
                    .into_iter()
                    .map(|c| super::scripting::with_body(state, c.clone()).unwrap_or(c))
                    .collect();
                return super::cluster::run(state, conn.db, conn.proto, Work::Multi(queue)).await;
            }
            let unmade = matches!(placement, Placement::Unmade);
            let again = unmade.then(|| queue.clone());
            let done = {
                let _gate = match unless_busy(state, || state.gate.write()).await {
                    Ok(gate) => gate,
                    Err(busy) => {
                        return Reply::err(format!(
                            "EXECABORT Transaction discarded because of: {busy}"
                        ))
                    }
                };
                match watch_failed(state, &watched).await {
                    Ok(false) => {}
                    Ok(true) => return Reply::NullArray,
                    Err(e) => return internal(e),
                }
                exec(state, conn, queue, !unmade, Unit::Transaction).await
            };
            match (done, again) {
                (Ok(Some(reply)), _) => reply,
                // The database's first write, on a cluster: nothing was
                // written; it is created replicated and EXEC runs there.
                (Ok(None), Some(queue)) => {
                    let work = Work::Multi(queue);
                    super::cluster::create_and_run(state, conn.db, conn.proto, work).await
                }
                (Ok(None), None) => internal(NodeError::Internal("EXEC lost its queue".into())),
                (Err(e), _) => internal(e),
            }
        }
    }
}

/// Whether `key` of database `dbi` exists unexpired, read without
/// removing it if expired (as Redis's `keyIsExpired`, which WATCH uses).
async fn live_key(state: &RespState, dbi: u32, key: &[u8]) -> Result<bool, NodeError> {
    Db::new(state, dbi, None).is_live(key).await
}

/// Whether EXEC must abort for one of `watched` (see [`Watched`]).
async fn watch_failed(state: &RespState, watched: &[Watched]) -> Result<bool, NodeError> {
    for w in watched {
        if w.written() || (w.live && !live_key(state, w.db, &w.key).await?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs a transaction's commands with their writes held back in
/// `overlay`; their replies.
/// Runs `queue` on `conn` with its writes held in `overlay`; with `own`
/// (a transaction of the connection's own), each command goes to the
/// slowlog if slow and is shown to monitors, as Redis treats the commands
/// EXEC runs.
async fn run_queue(
    state: &RespState,
    conn: &mut Conn,
    queue: &[Vec<Vec<u8>>],
    overlay: &super::keyspace::Overlay,
    own: bool,
) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(queue.len());
    for args in queue {
        if lower(&args[0]) == "unwatch" {
            replies.push(Reply::ok());
            continue;
        }
        let command = match checked_command(args) {
            Ok(command) => command,
            Err(reply) => {
                replies.push(reply);
                continue;
            }
        };
        // Checked again as EXEC runs it: the user's rules may have changed
        // since it was queued (Redis's execCommand).
        let run_as = super::table::checked_subcommand(command, args).ok().flatten();
        let context = super::acl::Context::Multi;
        if let Err(denied) = state.acl_check_as(conn, run_as.unwrap_or(command), args, context) {
            replies.push(Reply::err(denied.exec_message()));
            continue;
        }
        let mut db = Db::new(state, conn.db, Some(overlay));
        db.client = Some(conn.id);
        let started = own.then(std::time::Instant::now);
        let reply = match run(state, conn, &db, command, args).await {
            Ok(reply) => reply,
            Err(e) => internal(e),
        };
        if own {
            // A script's error raised from one of its calls was counted
            // then; outside a transaction the connection's reply counts
            // what is left (so the flag is left to it).
            let counted = std::mem::take(&mut conn.error_counted);
            if let Reply::Error(e) = &reply {
                // Counted as the queued command's failure, as Redis counts
                // the commands EXEC runs.
                state.stats.count_failed(command, args, (!counted).then_some(e.as_str()));
            }
        }
        replies.push(reply);
        if let Some(started) = started {
            state.slowlog.note(conn, args, started.elapsed());
            if !(command.has(Flag::SkipMonitor) || command.has(Flag::Admin)) {
                super::monitor::feed(state, conn.db, &conn.info.addr, args);
            }
        }
    }
    replies
}

/// What [`exec`] runs: a transaction's queue, or one script (whose
/// refusals are worded for a script).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Transaction,
    Script,
}

impl Unit {
    fn discarded(self, why: &str) -> Reply {
        match self {
            Unit::Transaction => Reply::err(format!("EXECABORT Transaction discarded: {why}")),
            Unit::Script => {
                Reply::err(format!("ERR Script discarded, none of its writes applied: {why}"))
            }
        }
    }
}

/// EVAL and the like on a database of this node's own, or one not made
/// yet: run as a transaction of one command (alone, its writes applied
/// as one atomic batch when it returns).
async fn script_alone(
    state: &RespState,
    conn: &mut Conn,
    args: Vec<Vec<u8>>,
    placement: Placement,
) -> Reply {
    super::stripes::release_held();
    let unmade = matches!(placement, Placement::Unmade);
    let again = unmade.then(|| args.clone());
    let done = {
        let _gate = match unless_busy(state, || state.gate.write()).await {
            Ok(gate) => gate,
            Err(busy) => return Reply::err(busy),
        };
        exec(state, conn, vec![args], !unmade, Unit::Script).await
    };
    match (done, again) {
        (Ok(Some(Reply::Array(mut replies))), _) if replies.len() == 1 => {
            replies.pop().unwrap_or(Reply::Null)
        }
        (Ok(Some(reply)), _) => reply,
        (Ok(None), Some(args)) => match super::scripting::with_body(state, args) {
            Ok(args) => {
                let work = Work::Command(args);
                super::cluster::create_and_run(state, conn.db, conn.proto, work).await
            }
            Err(reply) => reply,
        },
        (Ok(None), None) => internal(NodeError::Internal("a script lost its command".into())),
        (Err(e), _) => internal(e),
    }
}

/// EXEC on a database of this node's own: the replies, or `None` when the
/// transaction writes to a database not made yet that `create_local` does
/// not allow to make here (nothing was written).
async fn exec(
    state: &RespState,
    conn: &mut Conn,
    queue: Vec<Vec<Vec<u8>>>,
    create_local: bool,
    unit: Unit,
) -> Result<Option<Reply>, NodeError> {
    let overlay = super::keyspace::Overlay::default();
    let own = unit == Unit::Transaction;
    let replies = run_queue(state, conn, &queue, &overlay, own).await;
    let events = overlay.take_events();
    let changed = overlay.changed();
    let (by_range, unseen) = overlay.into_batches();
    let by_range: Vec<_> = by_range.into_iter().collect();
    match Db::apply_transaction(state, by_range, &unseen, create_local, Some(conn.id)).await {
        Ok(true) => {
            state.saves.modified(changed);
            super::notify::publish(state, events);
        }
        Ok(false) => return Ok(None),
        Err(NodeError::Client { code: monotable_proto::ErrorCode::CrossChunkBatch, message }) => {
            return Ok(Some(unit.discarded(&message)))
        }
        Err(e) => return Err(e),
    }
    Ok(Some(Reply::Array(replies)))
}

/// Runs `command` (its arity checked) on `db` with its row's handler.
async fn run(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    command: &'static Command,
    args: &[Vec<u8>],
) -> Result<Reply, NodeError> {
    let reply = run_handler(state, conn, db, command, args).await;
    if state.tracking.any() && reply.is_ok() && !conn.in_script {
        // A container's subcommand has its own flags and keys (OBJECT
        // ENCODING, MEMORY USAGE and XINFO STREAM read their key).
        let command = match (command.subcommands.is_empty(), args.get(1)) {
            (false, Some(sub)) => {
                let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
                super::table::subcommand(command, &sub).unwrap_or(command)
            }
            _ => command,
        };
        // A script's calls remember its own keys (see `script_call`);
        // EVAL_RO and the like, flagged read-only, remember nothing
        // themselves.
        if command.has(Flag::Readonly) && command.handler != Handler::Scripting {
            remember_keys(state, conn.id, command, args);
        }
    }
    reply
}

/// CLIENT TRACKING: the keys of `command` (`args`) are remembered for
/// client `id`: a read-only command's, or the keys a script declared
/// once it called a read-only command.
fn remember_keys(state: &RespState, id: u64, command: &'static Command, args: &[Vec<u8>]) {
    let Some(keys) = super::introspect::keys_of(command, args) else { return };
    let keys: Vec<Vec<u8>> = keys.into_iter().map(|(i, _)| args[i].clone()).collect();
    let max = usize::try_from(state.config.int("tracking-table-max-keys")).unwrap_or(0);
    state.tracking.remember(&state.pubsub, id, keys, max);
}

/// [`run`]'s dispatch to the command's handler.
async fn run_handler(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    command: &'static Command,
    args: &[Vec<u8>],
) -> Result<Reply, NodeError> {
    let dbi = conn.db;
    let name = command.name;
    match command.handler {
        // EXEC denies blocking to what it runs, as Redis's
        // CLIENT_DENY_BLOCKING: MONITOR, which never replies again, too.
        Handler::Connection if name == "monitor" && db.tx.is_some() => {
            Ok(Reply::err("ERR MONITOR isn't allowed for DENY BLOCKING client"))
        }
        Handler::Connection if name == "monitor" => Ok(super::monitor::start(state, conn)),
        Handler::Connection => super::connection::run(state, conn, name, args).await,
        Handler::Command => Ok(super::introspect::command(args)),
        Handler::Acl => Ok(super::acl_command::run(state, conn, args)),
        Handler::Strings => super::strings::run(state, dbi, db, name, args).await,
        Handler::Bits => super::bits::run(state, dbi, db, name, args).await,
        Handler::Keys => super::keys::run(state, dbi, db, name, args).await,
        Handler::Collections => super::collections::run(state, dbi, db, command, args).await,
        Handler::Lists => super::lists::run(state, dbi, db, command, args).await,
        Handler::Zsets => super::zsets::run(state, dbi, conn.proto, db, command, args).await,
        Handler::Mt => Ok(super::mt::run(&state.node, name, args).await),
        Handler::PubSub => Ok(super::pubsub::run(state, conn, name, args)),
        Handler::Blocking => super::blocking::run(state, conn, db, name, args).await,
        Handler::Scripting if command.per_node && name == "function" => {
            Ok(super::scripting::functions::command(state, args).await)
        }
        Handler::Scripting if command.per_node => Ok(super::scripting::script(state, args).await),
        Handler::Scripting => run_script(state, conn, db, command, args).await,
        Handler::Server => super::config::server(state, db, name, args).await,
        Handler::Persistence => {
            Ok(super::persistence::run(state, conn, db.tx.is_some(), name, args).await)
        }
        Handler::Cluster => Ok(Reply::err("ERR This instance has cluster support disabled")),
        Handler::Sort => {
            // BY and GET read keys no argument names: only for a user who
            // may read every key (Redis's sortCommand).
            let every_key = conn.acl.as_ref().is_none_or(|s| s.user.reads_every_key(command, args));
            super::sort::run(state, dbi, db, name, args, every_key).await
        }
        Handler::Geo => super::geo::run(state, dbi, conn.proto, db, command, args).await,
        Handler::HyperLogLog => super::hyperloglog::run(state, dbi, db, name, args).await,
        Handler::Streams => super::stream_commands::run(state, conn, db, command, args).await,
        // Run by `execute` before anything is queued or placed; one that
        // reaches here (a forwarded command) is one this path does not run.
        Handler::Transaction => Ok(unknown_command(args)),
    }
}

/// Runs a script (EVAL and the like) inside a transaction (`db`'s
/// overlay): each command it calls runs through [`script_call`], its
/// writes held in the overlay; those of a script stopped at its budget
/// are dropped.
async fn run_script(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    command: &'static Command,
    args: &[Vec<u8>],
) -> Result<Reply, NodeError> {
    let name = command.name;
    // Shown before the script runs, so its calls follow it (Redis feeds
    // EVAL, EVALSHA and FCALL so).
    super::monitor::feed(state, conn.db, &conn.info.addr, args);
    let script = match super::scripting::invocation(state, name, args) {
        Ok(script) => script,
        Err(reply) => return Ok(reply),
    };
    let Some(overlay) = db.tx else {
        return Err(NodeError::Internal("a script ran outside a transaction".into()));
    };
    if script.refused_when_out_of_memory() && state.memory.over() {
        return Ok(Reply::err(super::maxmemory::OOM));
    }
    // Redis's compatibility mode: decided once, when the script starts.
    let mut out_of_memory = script.calls_checked_for_memory() && state.memory.over();
    let before = overlay.save();
    let read_only = script.read_only;
    // The script's own connection: SELECT inside it changes nothing else.
    let mut own = Conn::new(conn.id, conn.peer, true);
    own.db = conn.db;
    own.in_script = true;
    // Its calls are checked against the caller's ACL user.
    own.acl = conn.acl.clone();
    let function =
        name.starts_with("fcall").then(|| String::from_utf8_lossy(&args[1]).into_owned());
    let ticket = state.scripts.busy.begin(function, args);
    let mut running = super::scripting::start(state, script);
    let mut answer = None;
    // The errors its calls answered, each counted already (INFO
    // errorstats), as Redis counts them, caught by the script or not.
    let mut call_errors: Vec<String> = Vec::new();
    loop {
        match running.next(answer.take()).await {
            super::scripting::Step::Call(call) if call.acl_check => {
                answer = Some(acl_check_call(state, &own, &call.args));
            }
            super::scripting::Step::Call(call) => {
                own.proto = call.resp;
                let outer = (command, args);
                let refusals = Refusals { read_only, out_of_memory };
                let writes = checked_command(&call.args).is_ok_and(|c| c.has(Flag::Write));
                let reply = script_call(state, &mut own, overlay, call.args, refusals, outer).await;
                // A script that has written may go on writing (Redis's
                // SCRIPT_WRITE_DIRTY): the write is there either way.
                if writes && !matches!(reply, Reply::Error(_)) {
                    out_of_memory = false;
                    state.scripts.busy.wrote(ticket);
                }
                if let Reply::Error(e) = &reply {
                    state.stats.count_error(e);
                    call_errors.push(e.clone());
                }
                answer = Some(reply);
            }
            super::scripting::Step::Done(mut outcome) => {
                if state.scripts.busy.end(ticket) {
                    outcome.reply = Reply::err(super::scripting::busy::KILLED);
                }
                if outcome.stopped {
                    overlay.restore(before);
                }
                // A call's error the script raised (or returned) is not
                // counted twice.
                if let Reply::Error(e) = &outcome.reply {
                    conn.error_counted = call_errors.iter().any(|c| e.starts_with(c.as_str()));
                }
                return Ok(outcome.reply);
            }
        }
    }
}

/// `redis.acl_check_cmd`'s answer: 1 when the script's caller may run
/// `args`, 0 when not (nothing is logged), an error for an unknown
/// command.
fn acl_check_call(state: &RespState, conn: &Conn, args: &[Vec<u8>]) -> Reply {
    let Some(command) = super::introspect::command_of(args) else {
        return Reply::err("ERR Invalid command passed to redis.acl_check_cmd()");
    };
    let allowed = match &conn.acl {
        Some(session) => {
            state.acl.user(&session.user.name).is_some_and(|u| u.check(command, args).is_ok())
        }
        None => true,
    };
    Reply::Int(i64::from(allowed))
}

/// What refuses a script's calls besides the command's own checks.
struct Refusals {
    /// A read-only script: no writes.
    read_only: bool,
    /// Over `maxmemory` when the script started, and no write yet: no
    /// `denyoom` command.
    out_of_memory: bool,
}

/// One command a script calls, checked as Redis's `scriptCall` does
/// (known, its arity, allowed in scripts, no write from a read-only
/// script), run on the script's connection with the transaction's writes.
async fn script_call(
    state: &RespState,
    conn: &mut Conn,
    overlay: &super::keyspace::Overlay,
    args: Vec<Vec<u8>>,
    Refusals { read_only, out_of_memory }: Refusals,
    (script, script_args): (&'static Command, &[Vec<u8>]),
) -> Reply {
    let Some(command) = super::table::lookup(&lower(&args[0])) else {
        return Reply::err("ERR Unknown Redis command called from script");
    };
    let slot = state.stats.slot(command, args.get(1).map(Vec::as_slice));
    let wrong_arity = || {
        // Counted as refused, as Redis counts a script's call.
        if let Some(slot) = slot {
            state.stats.count_rejected(slot);
        }
        Reply::err("ERR Wrong number of args calling Redis command from script")
    };
    if !command.arity_fits(args.len()) {
        return wrong_arity();
    }
    let sub = match super::table::checked_subcommand(command, &args) {
        Ok(sub) => sub,
        Err(SubcommandError::Unknown) => {
            return Reply::err("ERR Unknown Redis command called from script")
        }
        Err(SubcommandError::Arity(_)) => return wrong_arity(),
    };
    let flagged = |flag| flagged(command, sub, flag);
    // Refused before it runs: counted as a rejected call, as Redis's
    // scriptCall counts its refusals.
    let rejected = |text: String| {
        if let Some(slot) = slot {
            state.stats.count_rejected(slot);
        }
        Reply::err(text)
    };
    if flagged(Flag::Noscript) || command.handler == Handler::Transaction {
        return rejected("ERR This Redis command is not allowed from script".into());
    }
    // As Redis's scriptCall: writes, and what may replicate (PUBLISH).
    if read_only && (flagged(Flag::Write) || command.may_replicate()) {
        return rejected("ERR Write commands are not allowed from read-only scripts.".into());
    }
    if out_of_memory && flagged(Flag::Denyoom) {
        return rejected(super::maxmemory::OOM.into());
    }
    if let Err(denied) = state.acl_check(conn, sub.unwrap_or(command), &args) {
        return rejected(format!("ERR The user executing the script {}", denied.script_message()));
    }
    let mut db = Db::new(state, conn.db, Some(overlay));
    db.client = Some(conn.id);
    let started = std::time::Instant::now();
    let reply = match Box::pin(run(state, conn, &db, command, &args)).await {
        Ok(reply) => reply,
        Err(e) => internal(e),
    };
    // CLIENT TRACKING: a script that reads has read the keys it declared
    // (Redis remembers its caller's command's keys).
    if state.tracking.any() && command.has(Flag::Readonly) {
        remember_keys(state, conn.id, script, script_args);
    }
    let took = started.elapsed();
    // Counted as Redis counts the commands a script calls: each as a call
    // of its own, besides the script's.
    if let Some(slot) = slot {
        state.stats.count_call(slot, took, matches!(reply, Reply::Error(_)));
    }
    state.slowlog.note_script_call(&args, took);
    super::monitor::feed(state, conn.db, &"lua", &args);
    reply
}
