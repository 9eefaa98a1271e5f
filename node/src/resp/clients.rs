//! The node's open RESP connections ([`Clients`], one [`ClientInfo`]
//! each), the pause of [`Pause`], and the `CLIENT` command: ID, GETNAME,
//! SETNAME, INFO, LIST, KILL, UNBLOCK, PAUSE, UNPAUSE, REPLY, NO-EVICT,
//! HELP, in Redis 7.0's words.
//!
//! A connection's task owns its [`super::state::Conn`]; what other
//! connections may read of it (CLIENT LIST, INFO) sits in its
//! [`ClientInfo`], written with relaxed atomic stores once per command
//! (see [`super::stats`]), so no lock is taken per command. The registry's
//! lock is taken on connect, on close, and by CLIENT LIST/KILL and INFO.
//!
//! What differs from `redis-server` 7.0: the buffer fields of CLIENT LIST
//! (`qbuf`, `argv-mem`, `rbs`, `omem`, `tot-mem`, ...) are 0, as
//! Monotable does not account them per connection; `user` is always
//! `default` (the only user); CLIENT NO-EVICT is accepted and shown as the
//! `e` flag, though nothing evicts clients here. CLIENT SETINFO and
//! NO-TOUCH are Redis 7.2's and unknown here, as in 7.0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::args::{lower, parse_i64, NOT_INTEGER};
use super::errors::{unknown_subcommand, SYNTAX};
use super::reply::Reply;
use super::state::{Conn, RespState};

/// In a MULTI ([`ClientInfo::flags`] bits, Redis's `x`).
pub const FLAG_MULTI: u8 = 1;
/// Waiting in a blocking command (Redis's `b`).
pub const FLAG_BLOCKED: u8 = 2;
/// Subscribed to a channel or pattern (Redis's `P`).
pub const FLAG_PUBSUB: u8 = 4;
/// CLIENT NO-EVICT ON (Redis's `e`).
pub const FLAG_NO_EVICT: u8 = 8;
/// In MONITOR mode (`O`).
pub const FLAG_MONITOR: u8 = 16;
/// CLIENT TRACKING on (`t`).
pub const FLAG_TRACKING: u8 = 32;
/// Tracking in BCAST mode (`B`).
pub const FLAG_TRACKING_BCAST: u8 = 128;

/// What other connections may see of one connection. Written by its own
/// task only (but for `killed` and the name, set under the mutex).
pub struct ClientInfo {
    pub id: u64,
    /// The client's address (`addr=`).
    pub addr: SocketAddr,
    /// The node's address the client connected to (`laddr=`).
    pub laddr: SocketAddr,
    /// The socket's file descriptor (-1 for a connection of no socket:
    /// a command forwarded by another node).
    pub fd: i32,
    created: Instant,
    /// Milliseconds from `created` to the start of the last command.
    last_ms: AtomicU64,
    pub db: AtomicU32,
    /// `FLAG_*` bits.
    pub flags: AtomicU8,
    pub sub: AtomicU32,
    pub psub: AtomicU32,
    /// Commands queued in its MULTI, -1 outside one.
    pub multi: AtomicI64,
    pub resp: AtomicU8,
    /// The command it ran last, as a [`super::stats`] slot
    /// (`u32::MAX`: none yet).
    pub last_cmd: AtomicU32,
    /// Its name (CLIENT SETNAME, HELLO SETNAME): a std Mutex, as no await
    /// happens while it is held, and it is taken only when the name is set
    /// or listed.
    name: Mutex<Option<Vec<u8>>>,
    /// Its ACL user's name (a std Mutex: taken on AUTH and when listed).
    user: Mutex<Vec<u8>>,
    /// CLIENT KILL chose it: its task closes the connection at once.
    killed: AtomicBool,
    /// Wakes its task when killed (a permit is kept if it is not waiting).
    kill_notify: tokio::sync::Notify,
    /// Waiting in a blocking command (its task sets it), so CLIENT UNBLOCK
    /// may end the wait.
    waiting: AtomicBool,
    /// CLIENT UNBLOCK's reason: 0 none, [`UNBLOCK_TIMEOUT`] or
    /// [`UNBLOCK_ERROR`].
    unblock: AtomicU8,
    unblock_notify: tokio::sync::Notify,
}

/// CLIENT UNBLOCK ... TIMEOUT: the blocked command answers as timed out.
pub const UNBLOCK_TIMEOUT: u8 = 1;
/// CLIENT UNBLOCK ... ERROR: it answers Redis's `UNBLOCKED` error.
pub const UNBLOCK_ERROR: u8 = 2;

impl ClientInfo {
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr, fd: i32) -> ClientInfo {
        ClientInfo {
            id,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            last_ms: AtomicU64::new(0),
            db: AtomicU32::new(0),
            flags: AtomicU8::new(0),
            sub: AtomicU32::new(0),
            psub: AtomicU32::new(0),
            multi: AtomicI64::new(-1),
            resp: AtomicU8::new(2),
            last_cmd: AtomicU32::new(u32::MAX),
            name: Mutex::new(None),
            user: Mutex::new(b"default".to_vec()),
            killed: AtomicBool::new(false),
            kill_notify: tokio::sync::Notify::new(),
            waiting: AtomicBool::new(false),
            unblock: AtomicU8::new(0),
            unblock_notify: tokio::sync::Notify::new(),
        }
    }

    /// Its task waits in a blocking command (`true`) or no longer does;
    /// a reason left from an earlier CLIENT UNBLOCK is cleared.
    pub fn set_waiting(&self, waiting: bool) {
        self.unblock.store(0, Ordering::Release);
        self.waiting.store(waiting, Ordering::Release);
    }

    /// CLIENT UNBLOCK: ends its wait with `reason` ([`UNBLOCK_TIMEOUT`]
    /// or [`UNBLOCK_ERROR`]); false when it waits for nothing.
    pub fn request_unblock(&self, reason: u8) -> bool {
        if !self.waiting.load(Ordering::Acquire)
            || self
                .unblock
                .compare_exchange(0, reason, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        self.unblock_notify.notify_one();
        true
    }

    /// Whether the connection is killed or CLIENT UNBLOCK ended its wait:
    /// a blocked command woken now must take nothing.
    pub fn leaving(&self) -> bool {
        self.is_killed() || self.unblock.load(Ordering::Acquire) != 0
    }

    /// Completes with the reason once CLIENT UNBLOCK ends its wait.
    pub async fn unblocked(&self) -> u8 {
        loop {
            let reason = self.unblock.load(Ordering::Acquire);
            if reason != 0 {
                return reason;
            }
            self.unblock_notify.notified().await;
        }
    }

    /// A command starts now (for `idle=`).
    pub fn touch(&self) {
        self.last_ms.store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Milliseconds since its last command started (or it connected).
    pub fn idle_ms(&self) -> u64 {
        let now = self.created.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }

    pub fn set_name(&self, name: Option<Vec<u8>>) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    pub fn set_user(&self, user: &[u8]) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = user.to_vec();
    }

    pub fn user(&self) -> Vec<u8> {
        self.user.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn name(&self) -> Option<Vec<u8>> {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Relaxed) & flag != 0
    }

    /// Sets or clears `flag`.
    pub fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed);
        }
    }

    /// Marks it killed and wakes its task, which closes the connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill_notify.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Completes once it is killed.
    pub async fn killed(&self) {
        if !self.is_killed() {
            self.kill_notify.notified().await;
        }
    }

    /// Its line of CLIENT LIST / CLIENT INFO (no newline), with Redis 7.0's
    /// fields in its order; `cmd` is the name of the command it ran last,
    /// `qbuf` the bytes of its query buffer (known only of the connection
    /// asking: its own command's), `tracking` its CLIENT TRACKING options
    /// when it tracks (`redir` is -1 when it does not, else its REDIRECT
    /// id or 0; flag `R` when that client is gone).
    pub fn line(
        &self,
        cmd: &str,
        qbuf: usize,
        tracking: Option<&super::tracking::Options>,
    ) -> String {
        let flags = self.flags.load(Ordering::Relaxed);
        let broken = tracking.is_some_and(|o| o.broken);
        let mut letters = String::new();
        for (on, letter) in [
            (flags & FLAG_MONITOR != 0, 'O'),
            (flags & FLAG_PUBSUB != 0, 'P'),
            (flags & FLAG_MULTI != 0, 'x'),
            (flags & FLAG_BLOCKED != 0, 'b'),
            (flags & FLAG_TRACKING != 0, 't'),
            (broken, 'R'),
            (flags & FLAG_TRACKING_BCAST != 0, 'B'),
            (flags & FLAG_NO_EVICT != 0, 'e'),
        ] {
            if on {
                letters.push(letter);
            }
        }
        let redir = tracking.map_or(-1, |o| o.redirect as i64);
        if letters.is_empty() {
            letters.push('N');
        }
        let name = self.name().map(|n| String::from_utf8_lossy(&n).into_owned());
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={letters} db={} sub={} \
             psub={} ssub=0 multi={} qbuf={qbuf} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 \
             oll=0 omem=0 tot-mem=0 events=r cmd={cmd} user={} redir={redir} resp={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            name.unwrap_or_default(),
            self.created.elapsed().as_secs(),
            self.idle_ms() / 1000,
            self.db.load(Ordering::Relaxed),
            self.sub.load(Ordering::Relaxed),
            self.psub.load(Ordering::Relaxed),
            self.multi.load(Ordering::Relaxed),
            String::from_utf8_lossy(&self.user()),
            self.resp.load(Ordering::Relaxed),
        )
    }
}

/// The open connections of a node, by id (so in the order they came).
#[derive(Default)]
pub struct Clients {
    /// A std Mutex, not a tokio one: no await happens while it is held,
    /// and it is taken per connection and per CLIENT LIST/KILL or INFO,
    /// never per command.
    open: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientInfo>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether client `id` is connected.
    pub fn exists(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    /// Lists `info` until the returned guard is dropped.
    pub fn register(&self, info: Arc<ClientInfo>) -> Registered<'_> {
        let id = info.id;
        self.lock().insert(id, info);
        Registered { clients: self, id }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open connection, in id order.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        self.lock().values().cloned().collect()
    }

    /// Kills every connection idle for `timeout` or longer, but those
    /// subscribed or blocked (as Redis's `timeout` spares them).
    pub fn close_idle(&self, timeout: Duration) {
        let limit_ms = timeout.as_millis() as u64;
        for info in self.all() {
            if !info.has(FLAG_PUBSUB | FLAG_BLOCKED) && info.idle_ms() >= limit_ms {
                info.kill();
            }
        }
    }
}

/// A connection listed in [`Clients`]: unlisted when dropped.
pub struct Registered<'a> {
    clients: &'a Clients,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

/// CLIENT PAUSE: until when commands (all, or only writes) wait.
#[derive(Default)]
pub struct Pause {
    /// Milliseconds since `epoch` the pause ends at; 0: no pause.
    until_ms: AtomicU64,
    /// The pause holds every command, not only writes.
    all: AtomicBool,
    /// Woken by CLIENT UNPAUSE.
    ended: tokio::sync::Notify,
}

impl Pause {
    /// Pauses for `for_ms` from now (`epoch` is the node's start); a pause
    /// already in place keeps its later end and its stricter mode, as
    /// Redis's `pauseClients`.
    pub fn start(&self, epoch: Instant, for_ms: u64, all: bool) {
        let until = (epoch.elapsed().as_millis() as u64).saturating_add(for_ms).max(1);
        let current = self.until_ms.load(Ordering::Acquire);
        let active = current > epoch.elapsed().as_millis() as u64;
        self.all.store(all || (active && self.all.load(Ordering::Acquire)), Ordering::Release);
        self.until_ms.store(if active { until.max(current) } else { until }, Ordering::Release);
    }

    pub fn end(&self) {
        self.until_ms.store(0, Ordering::Release);
        self.all.store(false, Ordering::Release);
        self.ended.notify_waiters();
    }

    /// Whether a command (a write, or not) would wait now: one atomic load
    /// when no pause is on.
    pub fn holds(&self, epoch: Instant, write: bool) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until != 0
            && (write || self.all.load(Ordering::Acquire))
            && until > epoch.elapsed().as_millis() as u64
    }

    /// Waits while a pause holds a command (a write, or not).
    pub async fn wait(&self, epoch: Instant, write: bool) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check: an UNPAUSE after it wakes us.
            ended.as_mut().enable();
            if !self.holds(epoch, write) {
                return;
            }
            let until = self.until_ms.load(Ordering::Acquire);
            let left = until.saturating_sub(epoch.elapsed().as_millis() as u64);
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(Duration::from_millis(left)) => {}
            }
        }
    }
}

/// CLIENT's help, in Redis 7.0's words, of the subcommands here.
const HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "HELP",
    "    Prints this help.",
];

/// A client type of CLIENT LIST TYPE / CLIENT KILL TYPE.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    Normal,
    /// Master or replica: no connection here is one.
    Replication,
    Pubsub,
}

fn client_type(name: &[u8]) -> Result<Type, Reply> {
    match lower(name).as_str() {
        "normal" => Ok(Type::Normal),
        "master" | "slave" | "replica" => Ok(Type::Replication),
        "pubsub" => Ok(Type::Pubsub),
        _ => {
            Err(Reply::err(format!("ERR Unknown client type '{}'", String::from_utf8_lossy(name))))
        }
    }
}

fn is_type(info: &ClientInfo, t: Type) -> bool {
    match t {
        Type::Normal => !info.has(FLAG_PUBSUB),
        Type::Replication => false,
        Type::Pubsub => info.has(FLAG_PUBSUB),
    }
}

/// Runs `CLIENT subcommand ...` (`args[0]` is CLIENT).
/// CLIENT SETINFO LIB-NAME|LIB-VER value: Redis 7.2's, which client
/// libraries (redis-py, go-redis, Jedis, ioredis) send on every connect.
/// Accepted with 7.2's checks and errors, so that they see OK; not shown
/// by COMMAND (7.0.15 has no such subcommand) nor in CLIENT LIST (7.0's
/// fields).
fn setinfo(args: &[Vec<u8>]) -> Reply {
    if args.len() != 4 {
        return Reply::wrong_arity("client|setinfo");
    }
    let attr = String::from_utf8_lossy(&args[2]);
    if !matches!(lower(&args[2]).as_str(), "lib-name" | "lib-ver") {
        return Reply::err(format!("ERR Unrecognized option '{attr}'"));
    }
    if args[3].iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Reply::err(format!(
            "ERR {attr} cannot contain spaces, newlines or special characters."
        ));
    }
    Reply::ok()
}

pub fn client(state: &RespState, conn: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let on_off = |word: &[u8]| match lower(word).as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    };
    match lower(&args[1]).as_str() {
        "setinfo" => setinfo(args),
        "id" => Reply::Int(conn.id as i64),
        "getname" => conn.name.clone().map_or(Reply::Null, Reply::Bulk),
        "setname" => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                return Reply::err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            conn.name = if args[2].is_empty() { None } else { Some(args[2].clone()) };
            conn.info.set_name(conn.name.clone());
            Reply::ok()
        }
        "info" => Reply::Verbatim(line(state, &conn.info, args) + "\n"),
        "list" => list(state, conn, args),
        "kill" => kill(state, conn, &args[2..]),
        "unblock" => unblock(state, args),
        "pause" => pause(state, &args[2..]),
        "unpause" => {
            state.pause.end();
            Reply::ok()
        }
        "reply" => match lower(&args[2]).as_str() {
            "on" => {
                conn.reply_off = false;
                conn.reply_skip = 0;
                Reply::ok()
            }
            "off" => {
                conn.reply_off = true;
                Reply::ok()
            }
            "skip" => {
                // This reply and the next command's are not sent.
                conn.reply_skip = 2;
                Reply::ok()
            }
            _ => Reply::err(SYNTAX),
        },
        "no-evict" => match on_off(&args[2]) {
            Some(on) => {
                conn.info.set_flag(FLAG_NO_EVICT, on);
                Reply::ok()
            }
            None => Reply::err(SYNTAX),
        },
        "help" => Reply::Array(HELP.iter().map(|l| Reply::Simple(l)).collect()),
        "tracking" => tracking(state, conn, args),
        "caching" => match lower(&args[2]).as_str() {
            w @ ("yes" | "no") => match state.tracking.caching(conn.id, w == "yes") {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::err(e),
            },
            _ => Reply::err(SYNTAX),
        },
        "getredir" => Reply::Int(state.tracking.options(conn.id).map_or(-1, |o| o.redirect as i64)),
        "trackinginfo" => tracking_info(state, conn.id),
        _ => unknown_subcommand(&args[0], &args[1]),
    }
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN]
/// [OPTOUT] [NOLOOP], parsed and checked as Redis 7.0 does.
fn tracking(state: &RespState, conn: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let mut o = super::tracking::Options::default();
    let mut prefixes = Vec::new();
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        match lower(&args[j]).as_str() {
            "redirect" if more => {
                j += 1;
                if o.redirect != 0 {
                    return Reply::err("ERR A client can only redirect to a single other client");
                }
                let Some(id) = parse_i64(&args[j]) else { return Reply::err(NOT_INTEGER) };
                if id <= 0 || !state.clients.exists(id as u64) {
                    return Reply::err("ERR The client ID you want redirect to does not exist");
                }
                o.redirect = id as u64;
            }
            "bcast" => o.bcast = true,
            "optin" => o.optin = true,
            "optout" => o.optout = true,
            "noloop" => o.noloop = true,
            "prefix" if more => {
                j += 1;
                prefixes.push(args[j].clone());
            }
            _ => return Reply::err(SYNTAX),
        }
        j += 1;
    }
    match lower(&args[2]).as_str() {
        "on" => {
            let bcast = o.bcast;
            if let Err(e) = state.tracking.enable(conn.id, o, prefixes) {
                return Reply::err(e);
            }
            conn.info.set_flag(FLAG_TRACKING, true);
            conn.info.set_flag(FLAG_TRACKING_BCAST, bcast);
        }
        "off" => {
            state.tracking.disable(conn.id);
            for flag in [FLAG_TRACKING, FLAG_TRACKING_BCAST] {
                conn.info.set_flag(flag, false);
            }
        }
        _ => return Reply::err(SYNTAX),
    }
    Reply::ok()
}

/// CLIENT TRACKINGINFO: flags, redirect, prefixes, as Redis 7.0 gives them.
fn tracking_info(state: &RespState, id: u64) -> Reply {
    let o = state.tracking.options(id);
    let mut flags = vec![Reply::bulk(if o.is_some() { "on" } else { "off" })];
    let mut redirect = -1;
    let mut prefixes = Vec::new();
    if let Some(o) = o {
        for (on, name) in [
            (o.bcast, "bcast"),
            (o.optin, "optin"),
            (o.optin && o.caching, "caching-yes"),
            (o.optout, "optout"),
            (o.optout && o.caching, "caching-no"),
            (o.noloop, "noloop"),
            (o.broken, "broken_redirect"),
        ] {
            if on {
                flags.push(Reply::bulk(name));
            }
        }
        redirect = o.redirect as i64;
        prefixes = o.prefixes.into_iter().map(Reply::Bulk).collect();
    }
    Reply::Map(vec![
        (Reply::bulk("flags"), Reply::Set(flags)),
        (Reply::bulk("redirect"), Reply::Int(redirect)),
        (Reply::bulk("prefixes"), Reply::Array(prefixes)),
    ])
}

/// `info`'s CLIENT LIST line, naming its last command, for the connection
/// running `args`: its own query buffer holds them (in RESP's encoding).
fn line(state: &RespState, info: &ClientInfo, args: &[Vec<u8>]) -> String {
    let slot = info.last_cmd.load(Ordering::Relaxed);
    let qbuf = match args.len() {
        0 => 0,
        n => {
            let bulks: usize = args.iter().map(|a| a.len() + a.len().to_string().len() + 5).sum();
            bulks + n.to_string().len() + 3
        }
    };
    let tracking = state.tracking.options(info.id);
    info.line(state.stats.name(slot).unwrap_or("NULL"), qbuf, tracking.as_ref())
}

/// CLIENT LIST [TYPE type | ID id [id ...]], as Redis 7.0 parses it
/// (`args` the whole command).
fn list(state: &RespState, conn: &Conn, args: &[Vec<u8>]) -> Reply {
    let options = &args[2..];
    let keep: Box<dyn Fn(&ClientInfo) -> bool> = match options {
        [] => Box::new(|_| true),
        [word, t] if lower(word) == "type" => match client_type(t) {
            Ok(t) => Box::new(move |i| is_type(i, t)),
            Err(reply) => return reply,
        },
        [word, ids @ ..] if lower(word) == "id" && !ids.is_empty() => {
            let mut wanted = Vec::with_capacity(ids.len());
            for id in ids {
                match parse_i64(id) {
                    Some(id) if id > 0 => wanted.push(id as u64),
                    _ => return Reply::err("ERR Invalid client ID"),
                }
            }
            Box::new(move |i| wanted.contains(&i.id))
        }
        _ => return Reply::err(SYNTAX),
    };
    let mut out = String::new();
    for info in state.clients.all().iter().filter(|i| keep(i)) {
        let own: &[Vec<u8>] = if info.id == conn.id { args } else { &[] };
        out.push_str(&line(state, info, own));
        out.push('\n');
    }
    Reply::Verbatim(out)
}

/// CLIENT UNBLOCK client-id [TIMEOUT|ERROR]: 1 when the client waited in a
/// blocking command and now answers (as timed out, or Redis's `UNBLOCKED`
/// error), else 0.
fn unblock(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let options = &args[2..];
    if options.len() > 2 {
        return super::errors::subcommand_syntax(&args[0], &args[1]);
    }
    let reason = match options.get(1).map(|r| lower(r)) {
        None => UNBLOCK_TIMEOUT,
        Some(r) if r == "timeout" => UNBLOCK_TIMEOUT,
        Some(r) if r == "error" => UNBLOCK_ERROR,
        Some(_) => return Reply::err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
    };
    let Some(id) = parse_i64(&options[0]) else { return Reply::err(NOT_INTEGER) };
    let target = state.clients.all().into_iter().find(|c| i64::try_from(c.id) == Ok(id));
    Reply::Int(i64::from(target.is_some_and(|c| c.request_unblock(reason))))
}

/// CLIENT KILL addr (may kill itself; `+OK` or "No such client") or CLIENT
/// KILL filter value ... (how many it killed; SKIPME YES by default).
fn kill(state: &RespState, conn: &Conn, options: &[Vec<u8>]) -> Reply {
    let old_form = options.len() == 1;
    let (mut id, mut kind, mut addr, mut laddr, mut user) = (None, None, None, None, None);
    let mut skip_me = !old_form;
    if old_form {
        addr = Some(options[0].clone());
    } else {
        let mut i = 0;
        while i < options.len() {
            let Some(value) = options.get(i + 1) else { return Reply::err(SYNTAX) };
            match lower(&options[i]).as_str() {
                "id" => match parse_i64(value) {
                    Some(n) if n >= 1 => id = Some(n as u64),
                    _ => return Reply::err("ERR client-id should be greater than 0"),
                },
                "type" => match client_type(value) {
                    Ok(t) => kind = Some(t),
                    Err(reply) => return reply,
                },
                "addr" => addr = Some(value.clone()),
                "laddr" => laddr = Some(value.clone()),
                "user" if state.acl.user(value).is_some() => user = Some(value.clone()),
                "user" => {
                    return Reply::err(format!(
                        "ERR No such user '{}'",
                        String::from_utf8_lossy(value)
                    ))
                }
                "skipme" => match lower(value).as_str() {
                    "yes" => skip_me = true,
                    "no" => skip_me = false,
                    _ => return Reply::err(SYNTAX),
                },
                _ => return Reply::err(SYNTAX),
            }
            i += 2;
        }
    }
    let mut killed = 0;
    for info in state.clients.all() {
        let matches = id.is_none_or(|id| info.id == id)
            && kind.is_none_or(|t| is_type(&info, t))
            && addr.as_ref().is_none_or(|a| info.addr.to_string().as_bytes() == a.as_slice())
            && laddr.as_ref().is_none_or(|a| info.laddr.to_string().as_bytes() == a.as_slice())
            && user.as_ref().is_none_or(|u| info.user() == *u);
        if matches && !(skip_me && info.id == conn.id) {
            // Its own connection closes once this reply is written.
            info.kill();
            killed += 1;
        }
    }
    match (old_form, killed) {
        (true, 0) => Reply::err("ERR No such client"),
        (true, _) => Reply::ok(),
        (false, n) => Reply::Int(n),
    }
}

/// CLIENT PAUSE timeout [WRITE|ALL]: the mode is checked first, as Redis.
fn pause(state: &RespState, options: &[Vec<u8>]) -> Reply {
    let all =
        match options.get(1).map(|m| lower(m)) {
            None => true,
            Some(m) if m == "all" => true,
            Some(m) if m == "write" => false,
            Some(_) if options.len() > 2 => return Reply::err(
                "ERR unknown subcommand or wrong number of arguments for 'pause'. Try CLIENT HELP.",
            ),
            Some(_) => return Reply::err("ERR CLIENT PAUSE mode must be WRITE or ALL"),
        };
    if options.len() > 2 {
        return Reply::err(
            "ERR unknown subcommand or wrong number of arguments for 'pause'. Try CLIENT HELP.",
        );
    }
    let for_ms = match parse_i64(&options[0]) {
        None => return Reply::err("ERR timeout is not an integer or out of range"),
        Some(t) if t < 0 => return Reply::err("ERR timeout is negative"),
        Some(t) => t as u64,
    };
    state.pause.start(state.started, for_ms, all);
    Reply::ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_line_has_redis_fields_in_order() {
        let info = ClientInfo::new(7, addr("127.0.0.1:5000"), addr("127.0.0.1:6379"), 9);
        info.set_name(Some(b"worker".to_vec()));
        info.set_flag(FLAG_MULTI, true);
        info.set_flag(FLAG_PUBSUB, true);
        let line = info.line("get", 26, None);
        let keys: Vec<&str> =
            line.split(' ').map(|kv| kv.split_once('=').expect("key=value").0).collect();
        assert_eq!(
            keys,
            [
                "id",
                "addr",
                "laddr",
                "fd",
                "name",
                "age",
                "idle",
                "flags",
                "db",
                "sub",
                "psub",
                "ssub",
                "multi",
                "qbuf",
                "qbuf-free",
                "argv-mem",
                "multi-mem",
                "rbs",
                "rbp",
                "obl",
                "oll",
                "omem",
                "tot-mem",
                "events",
                "cmd",
                "user",
                "redir",
                "resp"
            ]
        );
        assert!(line.contains(" name=worker ") && line.contains(" flags=Px "), "{line}");
        info.set_flag(FLAG_MULTI | FLAG_PUBSUB, false);
        assert!(info.line("get", 0, None).contains(" flags=N "));
    }

    #[test]
    fn registered_connections_leave_when_dropped() {
        let clients = Clients::default();
        let a = Arc::new(ClientInfo::new(1, addr("127.0.0.1:1"), addr("127.0.0.1:2"), 3));
        let b = Arc::new(ClientInfo::new(2, addr("127.0.0.1:4"), addr("127.0.0.1:2"), 5));
        let ra = clients.register(a);
        {
            let _rb = clients.register(b.clone());
            assert_eq!(clients.all().iter().map(|i| i.id).collect::<Vec<_>>(), [1, 2]);
            // Idle for 0 ms or more: closed, unless blocked or subscribed.
            b.set_flag(FLAG_BLOCKED, true);
            clients.close_idle(Duration::ZERO);
            assert!(!b.is_killed() && clients.all()[0].is_killed());
        }
        assert_eq!(clients.len(), 1);
        drop(ra);
        assert!(clients.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_pause_holds_writes_until_it_ends() {
        let epoch = Instant::now();
        let pause = Arc::new(Pause::default());
        assert!(!pause.holds(epoch, true));
        pause.start(epoch, 60_000, false);
        assert!(pause.holds(epoch, true) && !pause.holds(epoch, false));
        // A shorter, stricter pause keeps the later end and takes ALL.
        pause.start(epoch, 10, true);
        assert!(pause.holds(epoch, false));
        let waiting = tokio::spawn({
            let pause = pause.clone();
            async move { pause.wait(epoch, true).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        pause.end();
        waiting.await.expect("the writer goes on once unpaused");
        assert!(!pause.holds(epoch, true));
    }

    #[tokio::test]
    async fn a_killed_client_is_woken() {
        let info = Arc::new(ClientInfo::new(1, addr("127.0.0.1:1"), addr("127.0.0.1:2"), 3));
        let waiter = tokio::spawn({
            let info = info.clone();
            async move { info.killed().await }
        });
        info.kill();
        waiter.await.expect("woken");
        // Killed before anyone waited: the next wait ends at once.
        info.killed().await;
    }
}
