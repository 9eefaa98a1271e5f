//! The Redis commands, with Redis's replies and error messages.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::cluster::Placement;
use super::keyspace::{expire_at, now_ms, Db, Value, DATABASES, KIND_STRING};
use super::reply::Reply;
use crate::error::NodeError;
use crate::node::Node;

/// Stripes of the key lock table: read-modify-write commands hold the
/// stripes of their keys, so each is atomic among RESP clients.
use super::stripes::{KeyLocks, StripeGuards, LOCK_STRIPES};
/// Most bytes of commands (arguments, 32 bytes each besides their own)
/// one MULTI may queue; past it the command is refused and EXEC aborts.
/// Redis has no such bound; without one a client could make the node hold
/// any number of commands.
pub const MULTI_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Modification counters for WATCH, by key hash.
const VERSION_SLOTS: usize = 65_536;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub use super::args::{parse_i64, NOT_INTEGER};
pub const SYNTAX: &str = "ERR syntax error";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const OVERFLOW: &str = "ERR increment or decrement would overflow";

/// What every RESP connection of a node shares.
pub struct RespState {
    pub node: Arc<Node>,
    /// Key locks by stripe (see [`super::stripes`]).
    locks: KeyLocks,
    next_client_id: AtomicU64,
    /// SCAN cursors: number -> the key row to go on from.
    pub cursors: std::sync::Mutex<super::keys::Cursors>,
    /// Every command runs holding this for reading; EXEC holds it for
    /// writing, so a transaction runs alone.
    pub(super) gate: tokio::sync::RwLock<()>,
    /// Bumped whenever a key hashing here is written (for WATCH); a key
    /// is "modified" when its slot moved (rarely, another key's write).
    versions: Vec<AtomicU64>,
    /// Bumped by FLUSHDB and FLUSHALL: every watch fails.
    pub epoch: AtomicU64,
    /// Open connections (for INFO).
    pub clients: std::sync::atomic::AtomicUsize,
    started: std::time::Instant,
    /// A random id of this process, as Redis's `run_id`: tools (a sink
    /// among them) compare it to tell that the server restarted.
    run_id: String,
}

impl RespState {
    pub fn new(node: Arc<Node>) -> Self {
        RespState {
            node,
            locks: KeyLocks::default(),
            next_client_id: AtomicU64::new(1),
            cursors: Default::default(),
            gate: tokio::sync::RwLock::new(()),
            versions: (0..VERSION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            clients: Default::default(),
            started: std::time::Instant::now(),
            run_id: (0..20).map(|_| format!("{:02x}", rand::random::<u8>())).collect(),
        }
    }

    fn slot(db: u32, key: &[u8]) -> usize {
        crc32c::crc32c_append(db, key) as usize
    }

    /// What WATCH records of a key.
    fn version(&self, db: u32, key: &[u8]) -> (u64, u64) {
        let v = self.versions[Self::slot(db, key) % VERSION_SLOTS].load(Ordering::Acquire);
        (v, self.epoch.load(Ordering::Acquire))
    }

    pub fn new_conn(&self, peer: IpAddr) -> Conn {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        Conn::new(id, peer, !self.node.auth.is_required())
    }

    /// Checks AUTH's (or HELLO AUTH's) credentials through the node's
    /// shared, throttled check; only the default user exists.
    async fn check_credentials(&self, conn: &Conn, user: &[u8], pass: &[u8]) -> bool {
        let password_ok = self.node.auth.check(conn.peer, pass).await.is_ok();
        password_ok && user == b"default"
    }

    /// Locks the stripes of `keys` of database `db`, in stripe order (so two
    /// multi-key commands never wait on each other in a cycle).
    pub async fn lock(&self, db: u32, keys: &[&[u8]]) -> StripeGuards {
        // Only writers lock: their keys count as modified for WATCH.
        for k in keys {
            self.versions[Self::slot(db, k) % VERSION_SLOTS].fetch_add(1, Ordering::AcqRel);
        }
        let mut stripes: Vec<usize> =
            keys.iter().map(|k| Self::slot(db, k) % LOCK_STRIPES).collect();
        stripes.sort_unstable();
        stripes.dedup();
        self.locks.lock(stripes).await
    }
}

/// One client's connection state.
pub struct Conn {
    pub id: u64,
    /// The client's address, which AUTH failures are throttled by.
    pub peer: IpAddr,
    pub db: u32,
    /// Protocol version: 2 or 3 (after HELLO 3).
    pub proto: u8,
    pub name: Option<Vec<u8>>,
    /// AUTH succeeded, or no password is configured.
    pub authenticated: bool,
    /// Set by QUIT: close after the reply.
    pub closing: bool,
    /// Inside MULTI: the commands queued so far.
    multi: Option<Vec<Vec<Vec<u8>>>>,
    /// Bytes `multi` holds (see [`MULTI_QUEUE_MAX_BYTES`]).
    multi_bytes: usize,
    /// A command queued in this MULTI was refused: EXEC will abort.
    multi_failed: bool,
    /// WATCHed keys: (database, key, version seen).
    watched: Vec<(u32, Vec<u8>, (u64, u64))>,
}

impl Conn {
    /// A command was refused before it could run (an argument too large):
    /// inside MULTI, EXEC will abort, as for any command refused there.
    pub fn refused(&mut self) {
        if self.multi.is_some() {
            self.multi_failed = true;
        }
    }

    pub fn new(id: u64, peer: IpAddr, authenticated: bool) -> Self {
        Conn {
            id,
            peer,
            db: 0,
            proto: 2,
            name: None,
            authenticated,
            closing: false,
            multi: None,
            multi_failed: false,
            multi_bytes: 0,
            watched: Vec::new(),
        }
    }
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

fn arity_error(name: &str) -> Reply {
    Reply::wrong_arity(name)
}

fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0])
    );
    for a in args.iter().skip(1).take(32) {
        let a = String::from_utf8_lossy(a);
        msg.push_str(&format!("'{}' ", a.chars().take(128).collect::<String>()));
    }
    Reply::err(msg)
}

/// The one place a node error becomes a reply. Keys and values over the
/// node's limits are the client's doing: their message names the limit.
fn internal(e: NodeError) -> Reply {
    match e {
        NodeError::Client {
            code:
                monotable_proto::ErrorCode::KeyTooLarge | monotable_proto::ErrorCode::ValueTooLarge,
            message,
        } => Reply::err(format!("ERR {message}")),
        e => Reply::err(format!("ERR {e}")),
    }
}

/// (name, arity): a positive arity is exact, a negative one a minimum
/// (Redis's convention, counting the command name).
const COMMANDS: &[(&str, i32)] = &[
    ("ping", -1),
    ("echo", 2),
    ("quit", -1),
    ("select", 2),
    ("hello", -1),
    ("client", -2),
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("getdel", 2),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("type", 2),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("append", 3),
    ("strlen", 2),
    ("ttl", 2),
    ("pttl", 2),
    ("persist", 2),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("keys", 2),
    ("scan", -2),
    ("dbsize", 1),
    ("flushdb", -1),
    ("flushall", -1),
    ("rename", 3),
    ("renamenx", 3),
    ("getex", -2),
    ("incrbyfloat", 3),
    ("getrange", 4),
    ("setrange", 4),
    ("time", 1),
    ("hset", -4),
    ("hmset", -4),
    ("hsetnx", 4),
    ("hget", 3),
    ("hmget", -3),
    ("hgetall", 2),
    ("hdel", -3),
    ("hexists", 3),
    ("hlen", 2),
    ("hkeys", 2),
    ("hvals", 2),
    ("hstrlen", 3),
    ("hincrby", 4),
    ("hincrbyfloat", 4),
    ("sadd", -3),
    ("srem", -3),
    ("sismember", 3),
    ("smismember", -3),
    ("smembers", 2),
    ("scard", 2),
    ("sinter", -2),
    ("sunion", -2),
    ("sdiff", -2),
    ("spop", -2),
    ("srandmember", -2),
    ("lpush", -3),
    ("rpush", -3),
    ("lpushx", -3),
    ("rpushx", -3),
    ("lpop", -2),
    ("rpop", -2),
    ("llen", 2),
    ("lrange", 4),
    ("lindex", 3),
    ("lset", 4),
    ("lrem", 4),
    ("ltrim", 4),
    ("linsert", 5),
    ("zadd", -4),
    ("zrem", -3),
    ("zscore", 3),
    ("zmscore", -3),
    ("zincrby", 4),
    ("zcard", 2),
    ("zcount", 4),
    ("zrange", -4),
    ("zrangebyscore", -4),
    ("zrevrange", -4),
    ("zrevrangebyscore", -4),
    ("zrank", 3),
    ("zrevrank", 3),
    ("zremrangebyscore", 4),
    ("zremrangebyrank", 4),
    ("hscan", -3),
    ("sscan", -3),
    ("zscan", -3),
    ("auth", -2),
    ("reset", 1),
    ("info", -1),
    ("command", -1),
    ("mt.scan", -2),
    ("mt.agg", -2),
    ("mt.views", 1),
];

/// Runs one command.
/// The command's canonical name, once its arity is checked.
fn lookup(args: &[Vec<u8>]) -> Result<&'static str, Reply> {
    let name = lower(&args[0]);
    let Some(&(name, arity)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        return Err(unknown_command(args));
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        return Err(arity_error(name));
    }
    Ok(name)
}

/// Runs one command (or queues it, inside MULTI). Its writes are applied
/// on return; the reply may be sent once the returned acknowledgements have
/// come and the stable seq has passed what the command read (the caller
/// waits, once for a whole pipeline).
pub async fn execute(
    state: &RespState,
    conn: &mut Conn,
    args: Vec<Vec<u8>>,
) -> (Reply, super::keyspace::Durability) {
    let lowered = lower(&args[0]);
    if !conn.authenticated && !matches!(lowered.as_str(), "auth" | "hello" | "quit" | "reset") {
        // Redis reports an unknown command or a wrong arity first.
        let reply = match lookup(&args) {
            Err(reply) if !is_transaction(&lowered) => reply,
            _ => Reply::err("NOAUTH Authentication required."),
        };
        return (reply, Vec::new());
    }
    match lowered.as_str() {
        "multi" | "exec" | "discard" | "watch" | "unwatch" => {
            return (transaction(state, conn, &lowered, &args).await, Vec::new())
        }
        _ => {}
    }
    let name = match lookup(&args) {
        Ok(name) => name,
        Err(reply) => {
            if conn.multi.is_some() {
                conn.multi_failed = true;
            }
            return (reply, Vec::new());
        }
    };
    if let Some(queue) = &mut conn.multi {
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
            queue.push(args);
            return (Reply::Simple("QUEUED"), Vec::new());
        }
    }
    let placement = if super::cluster::is_per_node(name) {
        Placement::Local
    } else {
        super::cluster::placement(&state.node, conn.db)
    };
    if let Placement::Replicated(_) = placement {
        // Runs on the chunk's leader (see `cluster`).
        let reply = super::cluster::run(state, conn.db, conn.proto, Work::Command(args)).await;
        return (reply, Vec::new());
    }
    if name.starts_with("mt.") {
        // May wait long (a fresh aggregate): nothing of the burst is held
        // meanwhile.
        super::stripes::release_held();
    }
    let _gate = match state.gate.try_read() {
        Ok(gate) => gate,
        Err(_) => {
            // EXEC runs alone and may want a stripe this burst holds.
            super::stripes::release_held();
            state.gate.read().await
        }
    };
    let mut db = Db::new(&state.node, conn.db, None);
    db.create_local = !matches!(placement, Placement::Unmade);
    let reply = match run(state, conn, &db, name, &args).await {
        Ok(reply) => reply,
        Err(e) => internal(e),
    };
    if db.wants_replicated() {
        // The database's first write, on a cluster: nothing was written
        // here; it is created replicated and the command runs there.
        drop(_gate);
        super::stripes::release_held();
        let work = Work::Command(args);
        return (
            super::cluster::create_and_run(state, conn.db, conn.proto, work).await,
            Vec::new(),
        );
    }
    (reply, db.take_durability())
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
    match lookup(args) {
        Ok(name) if !is_transaction(name) && !super::cluster::is_per_node(name) => {
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
) -> Result<(Reply, Vec<monotable_proto::WriteOp>), NodeError> {
    let overlay = super::keyspace::Overlay::default();
    let mut conn = Conn::new(0, IpAddr::from([127, 0, 0, 1]), true);
    conn.db = dbi;
    conn.proto = proto;
    let reply = match work {
        Work::Command(args) => {
            let name = match lookup(args) {
                Ok(name) => name,
                Err(reply) => return Ok((reply, Vec::new())),
            };
            let db = Db::new(&state.node, dbi, Some(&overlay));
            match run(state, &mut conn, &db, name, args).await {
                Ok(reply) => reply,
                Err(e) => return Ok((internal(e), Vec::new())),
            }
        }
        Work::Multi(queue) => Reply::Array(run_queue(state, &mut conn, queue, &overlay).await),
        Work::Pipeline(queue) => {
            let mut out = Vec::new();
            for reply in run_queue(state, &mut conn, queue, &overlay).await {
                reply.write(proto, &mut out);
            }
            Reply::Raw(out)
        }
        Work::Expire => {
            let db = Db::new(&state.node, dbi, Some(&overlay));
            Reply::Int(super::keys::expire_db(state, dbi, &db).await? as i64)
        }
    };
    let mut by_range = overlay_ops(overlay);
    let range = super::keyspace::range_name(dbi);
    let ops = by_range.remove(&range).unwrap_or_default();
    if !by_range.is_empty() {
        return Ok((
            Reply::err(format!(
                "EXECABORT Transaction discarded: its writes span databases other than {dbi}"
            )),
            Vec::new(),
        ));
    }
    Ok((reply, ops))
}

/// A transaction's held-back writes, by range.
fn overlay_ops(
    overlay: super::keyspace::Overlay,
) -> std::collections::BTreeMap<String, Vec<monotable_proto::WriteOp>> {
    let writes = overlay.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut by_range: std::collections::BTreeMap<String, Vec<monotable_proto::WriteOp>> =
        Default::default();
    for ((range, row), value) in writes {
        by_range.entry(range).or_default().push(match value {
            Some(v) => monotable_proto::WriteOp::Put { key: row.into(), value: v.into() },
            None => monotable_proto::WriteOp::Delete { key: row.into() },
        });
    }
    by_range
}

fn is_transaction(name: &str) -> bool {
    matches!(name, "multi" | "exec" | "discard" | "watch" | "unwatch")
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
async fn transaction(state: &RespState, conn: &mut Conn, name: &str, args: &[Vec<u8>]) -> Reply {
    let only_name = |n: &str| args.len() != 1 && n != "watch";
    if only_name(name) || (name == "watch" && args.len() < 2) {
        return arity_error(name);
    }
    match name {
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
            for k in &args[1..] {
                conn.watched.push((conn.db, k.clone(), state.version(conn.db, k)));
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
                return super::cluster::run(state, conn.db, conn.proto, Work::Multi(queue)).await;
            }
            let unmade = matches!(placement, Placement::Unmade);
            let again = unmade.then(|| queue.clone());
            let done = {
                let _gate = state.gate.write().await;
                if watched.iter().any(|(db, k, seen)| state.version(*db, k) != *seen) {
                    return Reply::NullArray;
                }
                exec(state, conn, queue, !unmade).await
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

/// Runs a transaction's commands with their writes held back in
/// `overlay`; their replies.
async fn run_queue(
    state: &RespState,
    conn: &mut Conn,
    queue: &[Vec<Vec<u8>>],
    overlay: &super::keyspace::Overlay,
) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(queue.len());
    for args in queue {
        if lower(&args[0]) == "unwatch" {
            replies.push(Reply::ok());
            continue;
        }
        let name = match lookup(args) {
            Ok(name) => name,
            Err(reply) => {
                replies.push(reply);
                continue;
            }
        };
        let db = Db::new(&state.node, conn.db, Some(overlay));
        replies.push(match run(state, conn, &db, name, args).await {
            Ok(reply) => reply,
            Err(e) => internal(e),
        });
    }
    replies
}

/// EXEC on a database of this node's own: the replies, or `None` when the
/// transaction writes to a database not made yet that `create_local` does
/// not allow to make here (nothing was written).
async fn exec(
    state: &RespState,
    conn: &mut Conn,
    queue: Vec<Vec<Vec<u8>>>,
    create_local: bool,
) -> Result<Option<Reply>, NodeError> {
    let overlay = super::keyspace::Overlay::default();
    let replies = run_queue(state, conn, &queue, &overlay).await;
    let by_range = overlay_ops(overlay);
    if by_range.len() > 1 {
        return Ok(Some(Reply::err(
            "EXECABORT Transaction discarded: its writes span more than one database (SELECT inside MULTI)",
        )));
    }
    if let Some((range, ops)) = by_range.into_iter().next() {
        let mut db = Db::of_range(&state.node, range.clone(), None);
        db.create_local = create_local;
        match db.write_atomic(ops).await {
            Ok(()) => {}
            Err(_) if db.wants_replicated() => return Ok(None),
            Err(NodeError::Client { code: monotable_proto::ErrorCode::CrossChunkBatch, .. }) => {
                return Ok(Some(Reply::err(format!(
                    "EXECABORT Transaction discarded: its keys fall in more than one chunk of range {range}; a transaction is atomic within one chunk"
                ))))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Reply::Array(replies)))
}

async fn run(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> Result<Reply, NodeError> {
    let dbi = conn.db;
    if let Some(reply) = super::collections::run(state, dbi, db, name, args).await {
        return reply;
    }
    if let Some(reply) = super::mt::run(&state.node, name, args).await {
        return Ok(reply);
    }
    if let Some(reply) = super::keys::run(state, dbi, db, name, args).await {
        return reply;
    }
    if let Some(reply) = super::lists::run(state, dbi, db, name, args).await {
        return reply;
    }
    if let Some(reply) = super::zsets::run(state, dbi, conn.proto, db, name, args).await {
        return reply;
    }
    Ok(match name {
        "ping" => match args.len() {
            1 => Reply::Simple("PONG"),
            2 => Reply::bulk(args[1].clone()),
            _ => arity_error("ping"),
        },
        "echo" => Reply::bulk(args[1].clone()),
        "quit" => {
            conn.closing = true;
            Reply::ok()
        }
        "select" => match super::args::in_range(&args[1], i32::MIN.into(), i32::MAX.into()) {
            Ok(i) if (0..i64::from(DATABASES)).contains(&i) => {
                conn.db = i as u32;
                Reply::ok()
            }
            Ok(_) => Reply::err("ERR DB index is out of range"),
            Err(reply) => reply,
        },
        "hello" => hello(state, conn, args).await,
        "auth" => {
            let (user, pass) = match args.len() {
                2 if !state.node.auth.is_required() => {
                    return Ok(Reply::err(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                    ))
                }
                2 => (&b"default"[..], &args[1][..]),
                3 => (&args[1][..], &args[2][..]),
                _ => return Ok(Reply::err(SYNTAX)),
            };
            if state.check_credentials(conn, user, pass).await {
                conn.authenticated = true;
                Reply::ok()
            } else {
                Reply::err(WRONGPASS)
            }
        }
        "reset" => {
            *conn = Conn::new(conn.id, conn.peer, !state.node.auth.is_required());
            Reply::Simple("RESET")
        }
        "info" => Reply::bulk(info(state).into_bytes()),
        "command" => command_info(args),
        "client" => client(conn, args),
        "get" => match db.get(&args[1]).await? {
            None => Reply::Null,
            Some(v) if v.kind != KIND_STRING => Reply::err(WRONGTYPE),
            Some(v) => Reply::bulk(v.payload),
        },
        "set" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            set(db, args).await?
        }
        "setnx" | "setex" | "psetex" => {
            let (key, value, expire) = match name {
                "setnx" => (&args[1], &args[2], None),
                _ => {
                    let Some(t) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
                    match expire_at(if name == "setex" { "ex" } else { "px" }, t) {
                        Some(at) => (&args[1], &args[3], Some(at)),
                        None => {
                            return Ok(Reply::err(format!(
                                "ERR invalid expire time in '{name}' command"
                            )))
                        }
                    }
                }
            };
            let _g = state.lock(dbi, &[key]).await;
            if name == "setnx" {
                if db.get(key).await?.is_some() {
                    return Ok(Reply::Int(0));
                }
                db.put(key, &Value::string(value.clone(), None)).await?;
                Reply::Int(1)
            } else {
                let old = db.get(key).await?;
                db.replace(key, &Value::string(value.clone(), expire), old.as_ref()).await?;
                Reply::ok()
            }
        }
        "getset" | "getdel" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            let old = db.get(&args[1]).await?;
            if old.as_ref().is_some_and(|v| v.kind != KIND_STRING) {
                return Ok(Reply::err(WRONGTYPE));
            }
            if name == "getset" {
                db.put(&args[1], &Value::string(args[2].clone(), None)).await?;
            } else if let Some(v) = &old {
                db.remove(&args[1], v).await?;
            }
            old.map_or(Reply::Null, |v| Reply::bulk(v.payload))
        }
        "mget" => {
            let mut out = Vec::with_capacity(args.len() - 1);
            for k in &args[1..] {
                out.push(match db.get(k).await? {
                    Some(v) if v.kind == KIND_STRING => Reply::bulk(v.payload),
                    _ => Reply::Null,
                });
            }
            Reply::Array(out)
        }
        "mset" | "msetnx" => {
            if args.len().is_multiple_of(2) {
                return Ok(arity_error(name));
            }
            let keys: Vec<&[u8]> = args[1..].iter().step_by(2).map(Vec::as_slice).collect();
            let _g = state.lock(dbi, &keys).await;
            if name == "msetnx" {
                for k in &keys {
                    if db.get(k).await?.is_some() {
                        return Ok(Reply::Int(0));
                    }
                }
            }
            // The last value of a key given twice wins, as in Redis.
            let mut last: std::collections::HashMap<&[u8], usize> = Default::default();
            for (i, pair) in args[1..].chunks(2).enumerate() {
                last.insert(&pair[0], i);
            }
            let items: Vec<(Vec<u8>, Value)> = args[1..]
                .chunks(2)
                .enumerate()
                .filter(|(i, pair)| last.get(pair[0].as_slice()) == Some(i))
                .map(|(_, pair)| (pair[0].clone(), Value::string(pair[1].clone(), None)))
                .collect();
            // One write: a value the storage refuses leaves every key as it was.
            let mut ops = Vec::new();
            for (k, _) in &items {
                if let Some(old) = db.get(k).await?.filter(|v| v.kind != KIND_STRING) {
                    ops.extend(db.remove_ops(k, &old).await?);
                }
            }
            ops.extend(super::keyspace::put_ops(&items));
            db.write(ops).await?;
            if name == "msetnx" {
                Reply::Int(1)
            } else {
                Reply::ok()
            }
        }
        "del" | "unlink" => {
            let keys: Vec<&[u8]> = args[1..].iter().map(Vec::as_slice).collect();
            let _g = state.lock(dbi, &keys).await;
            let mut seen: std::collections::HashSet<&[u8]> = Default::default();
            let mut found = 0;
            for k in &args[1..] {
                if !seen.insert(k) {
                    continue;
                }
                if let Some(v) = db.get(k).await? {
                    db.remove(k, &v).await?;
                    found += 1;
                }
            }
            Reply::Int(found)
        }
        "exists" => {
            let mut n = 0;
            for k in &args[1..] {
                n += i64::from(db.get(k).await?.is_some());
            }
            Reply::Int(n)
        }
        "type" => Reply::Simple(db.get(&args[1]).await?.map_or("none", |v| v.type_name())),
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => match parse_i64(&args[2]) {
                    Some(b) if name == "incrby" => b,
                    Some(b) => match b.checked_neg() {
                        Some(b) => b,
                        None => return Ok(Reply::err("ERR decrement would overflow")),
                    },
                    None => return Ok(Reply::err(NOT_INTEGER)),
                },
            };
            let _g = state.lock(dbi, &[&args[1]]).await;
            let old = db.get(&args[1]).await?;
            let (current, expire) = match &old {
                None => (0, None),
                Some(v) if v.kind != KIND_STRING => return Ok(Reply::err(WRONGTYPE)),
                Some(v) => match parse_i64(&v.payload) {
                    Some(n) => (n, v.expire_at_ms),
                    None => return Ok(Reply::err(NOT_INTEGER)),
                },
            };
            let Some(next) = current.checked_add(by) else { return Ok(Reply::err(OVERFLOW)) };
            db.put(&args[1], &Value::string(next.to_string().into_bytes(), expire)).await?;
            Reply::Int(next)
        }
        "append" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            let mut v = match db.get(&args[1]).await? {
                None => Value::string(Vec::new(), None),
                Some(v) if v.kind != KIND_STRING => return Ok(Reply::err(WRONGTYPE)),
                Some(v) => v,
            };
            if let Err(reply) = super::args::string_end(v.payload.len() as u64, args[2].len()) {
                return Ok(reply);
            }
            v.payload.extend_from_slice(&args[2]);
            db.put(&args[1], &v).await?;
            Reply::Int(v.payload.len() as i64)
        }
        "strlen" => match db.get(&args[1]).await? {
            None => Reply::Int(0),
            Some(v) if v.kind != KIND_STRING => Reply::err(WRONGTYPE),
            Some(v) => Reply::Int(v.payload.len() as i64),
        },
        "ttl" | "pttl" => match db.get(&args[1]).await? {
            None => Reply::Int(-2),
            Some(Value { expire_at_ms: None, .. }) => Reply::Int(-1),
            Some(Value { expire_at_ms: Some(at), .. }) => {
                let left = i64::try_from(at.saturating_sub(now_ms())).unwrap_or(i64::MAX);
                Reply::Int(if name == "ttl" { left.saturating_add(500) / 1000 } else { left })
            }
        },
        "persist" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            match db.get(&args[1]).await? {
                Some(mut v) if v.expire_at_ms.is_some() => {
                    v.expire_at_ms = None;
                    db.put(&args[1], &v).await?;
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            }
        }
        other => unknown_command(&[other.as_bytes().to_vec()]),
    })
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]
async fn set(db: &Db<'_>, args: &[Vec<u8>]) -> Result<Reply, NodeError> {
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expire: Option<u64> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = lower(&args[i]);
        let next = args.get(i + 1);
        match opt.as_str() {
            "nx" if !xx => nx = true,
            "xx" if !nx => xx = true,
            "get" => get = true,
            "keepttl" if expire.is_none() => keepttl = true,
            "ex" | "px" | "exat" | "pxat" if expire.is_none() && !keepttl && next.is_some() => {
                let Some(t) = next.and_then(|n| parse_i64(n)) else {
                    return Ok(Reply::err(NOT_INTEGER));
                };
                match expire_at(&opt, t) {
                    Some(at) => expire = Some(at),
                    None => return Ok(Reply::err("ERR invalid expire time in 'set' command")),
                }
                i += 1;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    let old = db.get(&args[1]).await?;
    if get && old.as_ref().is_some_and(|v| v.kind != KIND_STRING) {
        return Ok(Reply::err(WRONGTYPE));
    }
    let old_reply = || old.clone().map_or(Reply::Null, |v| Reply::bulk(v.payload));
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(if get { old_reply() } else { Reply::Null });
    }
    if keepttl {
        expire = old.as_ref().and_then(|v| v.expire_at_ms);
    }
    db.replace(&args[1], &Value::string(args[2].clone(), expire), old.as_ref()).await?;
    Ok(if get { old_reply() } else { Reply::ok() })
}

/// INFO: the sections clients and tools read most, in Redis's format
/// (`field:value` lines under `# Section` headers).
fn info(state: &RespState) -> String {
    let lines = [
        "# Server".to_owned(),
        "redis_version:7.2.0".to_owned(),
        "redis_mode:standalone".to_owned(),
        format!("monotable_version:{}", env!("CARGO_PKG_VERSION")),
        format!("process_id:{}", std::process::id()),
        format!("run_id:{}", state.run_id),
        format!("uptime_in_seconds:{}", state.started.elapsed().as_secs()),
        String::new(),
        "# Clients".to_owned(),
        format!("connected_clients:{}", state.clients.load(Ordering::Relaxed)),
        String::new(),
        "# Persistence".to_owned(),
        "aof_enabled:0".to_owned(),
        format!("monotable_fsync:{:?}", state.node.config.fsync),
        String::new(),
        "# Replication".to_owned(),
        "role:master".to_owned(),
        "connected_slaves:0".to_owned(),
    ];
    lines.join("\r\n") + "\r\n"
}

/// COMMAND [COUNT | INFO name... | DOCS ...]: names and arities, enough
/// for clients that look commands up.
fn command_info(args: &[Vec<u8>]) -> Reply {
    let entry = |name: &str, arity: i32| {
        Reply::Array(vec![
            Reply::bulk(name.as_bytes().to_vec()),
            Reply::Int(i64::from(arity)),
            Reply::Set(Vec::new()),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Int(0),
        ])
    };
    match args.get(1).map(|a| lower(a)).as_deref() {
        None => Reply::Array(COMMANDS.iter().map(|(n, a)| entry(n, *a)).collect()),
        Some("count") => Reply::Int(COMMANDS.len() as i64),
        Some("docs") => Reply::Map(Vec::new()),
        Some("info") => Reply::Array(
            args[2..]
                .iter()
                .map(|n| {
                    let n = lower(n);
                    COMMANDS
                        .iter()
                        .find(|(c, _)| *c == n)
                        .map_or(Reply::NullArray, |(c, a)| entry(c, *a))
                })
                .collect(),
        ),
        Some(_) => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

async fn hello(state: &RespState, conn: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let mut i = 1;
    let mut proto = conn.proto;
    if let Some(v) = args.get(1) {
        match parse_i64(v) {
            Some(p @ 2..=3) => proto = p as u8,
            Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
            None => return Reply::err("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut name = None;
    let mut authenticated = conn.authenticated;
    while i < args.len() {
        match lower(&args[i]).as_str() {
            "setname" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            "auth" if i + 2 < args.len() => {
                if !state.check_credentials(conn, &args[i + 1], &args[i + 2]).await {
                    return Reply::err(WRONGPASS);
                }
                authenticated = true;
                i += 3;
            }
            other => {
                return Reply::err(format!("ERR Syntax error in HELLO option '{other}'"));
            }
        }
    }
    if !authenticated {
        return Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    conn.authenticated = true;
    conn.proto = proto;
    if name.is_some() {
        conn.name = name;
    }
    let s = |x: &str| Reply::bulk(x.as_bytes().to_vec());
    Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s("7.2.0")),
        (s("proto"), Reply::Int(i64::from(conn.proto))),
        (s("id"), Reply::Int(conn.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ])
}

fn client(conn: &mut Conn, args: &[Vec<u8>]) -> Reply {
    match (lower(&args[1]).as_str(), args.len()) {
        ("id", 2) => Reply::Int(conn.id as i64),
        ("getname", 2) => conn.name.clone().map_or(Reply::Null, Reply::Bulk),
        ("setname", 3) => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                return Reply::err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            conn.name = if args[2].is_empty() { None } else { Some(args[2].clone()) };
            Reply::ok()
        }
        (sub @ ("id" | "getname" | "setname"), _) => {
            Reply::err(format!("ERR wrong number of arguments for 'client|{sub}' command"))
        }
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}
