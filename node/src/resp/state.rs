//! What the Redis endpoint keeps between commands: [`RespState`], shared
//! by every connection of a node (key locks, WATCH versions,
//! the transaction gate, the open connections, CLIENT PAUSE, INFO's
//! counters, CONFIG's values), and [`Conn`], one client's connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::node::Node;

/// Stripes of the key lock table: read-modify-write commands hold the
/// stripes of their keys, so each is atomic among RESP clients.
use super::stripes::{KeyLocks, StripeGuards, LOCK_STRIPES};

/// Most bytes of commands (arguments, 32 bytes each besides their own)
/// one MULTI may queue; past it the command is refused and EXEC aborts.
/// Redis has no such bound; without one a client could make the node hold
/// any number of commands.
pub const MULTI_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What every RESP connection of a node shares.
pub struct RespState {
    pub node: Arc<Node>,
    /// Key locks by stripe (see [`super::stripes`]).
    locks: KeyLocks,
    next_client_id: AtomicU64,
    /// Every command runs holding this for reading; EXEC holds it for
    /// writing, so a transaction runs alone.
    pub(super) gate: tokio::sync::RwLock<()>,
    /// Keys connections WATCH (see [`super::watches`]).
    pub watches: Arc<super::watches::Watches>,
    /// Open connections (CLIENT LIST, CLIENT KILL, INFO).
    pub clients: super::clients::Clients,
    /// CLIENT PAUSE.
    pub pause: super::clients::Pause,
    /// What INFO counts (see [`super::stats`]).
    pub stats: super::stats::Stats,
    /// SLOWLOG's entries (see [`super::slowlog`]).
    pub slowlog: super::slowlog::SlowLog,
    /// CONFIG's parameters.
    pub config: super::config::RespConfig,
    /// `notify-keyspace-events` (see [`super::notify`]).
    pub notify: super::notify::Flags,
    /// CLIENT TRACKING's table (see [`super::tracking`]).
    pub tracking: super::tracking::Tracking,
    /// LATENCY's events (see [`super::latency`]).
    pub latency: super::latency::Monitor,
    /// The RESP listener's address, once it listens (CONFIG GET port, INFO).
    pub resp_addr: std::sync::OnceLock<SocketAddr>,
    /// Resident bytes when the endpoint started (INFO's startup memory).
    pub(super) startup_rss: u64,
    /// The largest resident size seen (see [`RespState::peak_rss`]).
    peak_rss: AtomicU64,
    pub(super) started: std::time::Instant,
    /// A random id of this process, as Redis's `run_id`: tools (a sink
    /// among them) compare it to tell that the server restarted.
    pub(super) run_id: String,
    /// Channels and patterns subscribed to on this node.
    pub pubsub: Arc<super::pubsub::Hub>,
    /// Messages published here, on their way to the other nodes.
    pub relay: super::pubsub::Relay,
    /// Connections blocked on keys (BLPOP and the like).
    pub blocking: super::blocking::Waiters,
    /// Lua scripts' bodies and VM (EVAL, SCRIPT).
    pub scripts: Arc<super::scripting::Scripts>,
    /// SAVE's figures and SHUTDOWN's request (see [`super::persistence`]).
    pub saves: Arc<super::persistence::Saves>,
    /// The ACL users and log (see [`super::acl`]).
    pub acl: super::acl::Acl,
    /// `maxmemory` (see [`super::maxmemory`]).
    pub memory: super::maxmemory::MemoryGuard,
}

impl RespState {
    pub fn new(node: Arc<Node>) -> Self {
        let password = node.auth.password().map(|p| p.expose());
        let acl = match &node.config.acl_file {
            Some(path) => super::acl::Acl::with_file(password, path).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the ACL file did not load: only the default user exists");
                super::acl::Acl::new(password).with_path(path)
            }),
            None => super::acl::Acl::new(password),
        };
        RespState {
            acl,
            memory: Default::default(),
            node,
            locks: KeyLocks::default(),
            next_client_id: AtomicU64::new(1),
            gate: tokio::sync::RwLock::new(()),
            watches: Default::default(),
            clients: Default::default(),
            pause: Default::default(),
            stats: Default::default(),
            slowlog: Default::default(),
            config: Default::default(),
            notify: Default::default(),
            tracking: Default::default(),
            latency: Default::default(),
            resp_addr: Default::default(),
            startup_rss: super::info::rss_bytes(),
            peak_rss: AtomicU64::new(0),
            started: std::time::Instant::now(),
            run_id: (0..20).map(|_| format!("{:02x}", rand::random::<u8>())).collect(),
            pubsub: Default::default(),
            relay: Default::default(),
            blocking: Default::default(),
            scripts: Default::default(),
            saves: Default::default(),
        }
    }

    fn slot(db: u32, key: &[u8]) -> usize {
        crc32c::crc32c_append(db, key) as usize
    }

    /// A new connection from `peer` to `local` on socket `fd`; the caller
    /// lists its [`Conn::info`] in [`RespState::clients`].
    pub fn new_conn(&self, peer: SocketAddr, local: SocketAddr, fd: i32) -> Conn {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let mut conn = Conn::new(id, peer.ip(), false);
        conn.info = Arc::new(super::clients::ClientInfo::new(id, peer, local, fd));
        self.log_in_as_default(&mut conn);
        // A mailbox from the start: messages sent to this connection (a
        // tracking redirect's) reach it subscribed or not.
        conn.subs = Some(super::pubsub::Subscriptions::new(self.pubsub.clone(), id));
        conn
    }

    /// The largest resident size seen, `rss_now` included.
    pub(super) fn peak_rss(&self, rss_now: u64) -> u64 {
        self.peak_rss.fetch_max(rss_now, Ordering::Relaxed).max(rss_now)
    }

    /// Makes `conn` the `default` user's, authenticated when that user
    /// needs no password and is on (a new connection, RESET).
    pub(super) fn log_in_as_default(&self, conn: &mut Conn) {
        let user = self.acl.default_user();
        conn.authenticated = user.nopass() && user.enabled();
        conn.info.set_user(&user.name);
        conn.acl = Some(self.acl.session(user));
    }

    /// Checks AUTH's (or HELLO AUTH's) credentials through the node's
    /// shared failure throttle; on success the connection is `user`'s. A
    /// failure is logged (`ACL LOG`, reason `auth`).
    pub(super) async fn check_credentials(
        &self,
        conn: &mut Conn,
        via: &[u8],
        user: &[u8],
        pass: &[u8],
    ) -> bool {
        let mut found = None;
        let ok = self.node.auth.check_with(conn.peer, || {
            found = self.acl.credentials(user, pass);
            found.is_some()
        });
        match (ok.await, found) {
            (Ok(()), Some(found)) => {
                conn.authenticated = true;
                conn.info.set_user(&found.name);
                conn.acl = Some(self.acl.session(found));
                true
            }
            _ => {
                let context = if conn.multi.is_some() {
                    super::acl::Context::Multi
                } else {
                    super::acl::Context::Toplevel
                };
                self.acl.log(super::acl::LogEntry {
                    count: 1,
                    reason: "auth",
                    context,
                    object: via.to_vec(),
                    username: user.to_vec(),
                    at: std::time::Instant::now(),
                    client_info: conn.info.line("auth", 0, None),
                });
                false
            }
        }
    }

    /// Whether `conn`'s user may run `command` (the row run: a
    /// subcommand's own) with `args`; a refusal is logged (`ACL LOG`) and
    /// answered as Redis does. A connection of no user (one the node runs
    /// itself) may run anything.
    pub(super) fn acl_check(
        &self,
        conn: &mut Conn,
        command: &super::table::Command,
        args: &[Vec<u8>],
    ) -> Result<(), super::acl::Denied> {
        let context = if conn.in_script {
            super::acl::Context::Lua
        } else if conn.multi.is_some() {
            super::acl::Context::Multi
        } else {
            super::acl::Context::Toplevel
        };
        self.acl_check_as(conn, command, args, context)
    }

    /// [`RespState::acl_check`], logged under `context`.
    pub(super) fn acl_check_as(
        &self,
        conn: &mut Conn,
        command: &super::table::Command,
        args: &[Vec<u8>],
        context: super::acl::Context,
    ) -> Result<(), super::acl::Denied> {
        let Some(session) = conn.acl.as_mut() else { return Ok(()) };
        if !self.acl.refresh(session) {
            // Its user was removed (the connection is closing).
            return Err(super::acl::Denied::Command);
        }
        if session.user.unrestricted() {
            return Ok(());
        }
        let denied = match session.user.check(command, args) {
            Ok(()) => return Ok(()),
            Err(denied) => denied,
        };
        let name = session.user.name.clone();
        let info = conn.info.line(command.name, 0, None);
        self.acl.log(denied.entry(command.name, args, &name, context, info));
        Err(denied)
    }

    /// Locks the stripes of `keys` of database `db`, in stripe order (so two
    /// multi-key commands never wait on each other in a cycle); every key
    /// counts as written (see [`RespState::lock_keys`]).
    pub async fn lock(&self, db: u32, keys: &[&[u8]]) -> StripeGuards {
        self.lock_reading(db, keys, &[]).await
    }

    /// Locks the stripes of `written` and `read` (keys of database `db`) in
    /// one call (see [`RespState::lock_keys`]). For commands that read
    /// several keys and must see them at one moment (ZUNION,
    /// ZINTERSTORE's sources).
    pub async fn lock_reading(&self, db: u32, written: &[&[u8]], read: &[&[u8]]) -> StripeGuards {
        self.lock_keys(&Self::marked(db, written, read)).await
    }

    fn marked<'k>(db: u32, written: &[&'k [u8]], read: &[&'k [u8]]) -> Vec<(u32, &'k [u8], bool)> {
        let written = written.iter().map(|k| (db, *k, true));
        written.chain(read.iter().map(|k| (db, *k, false))).collect()
    }

    /// Wakes the clients blocked on `key` of database `db`, for a command
    /// that locked it as read only and wrote it after all (SMOVE: the
    /// destination only when the member was added).
    pub fn wake(&self, db: u32, key: &[u8]) {
        self.blocking.signal(db, key);
    }

    /// Locks the stripes of every `(database, key, written)` at once, in
    /// stripe order. Written keys wake the clients blocked on them (see
    /// [`super::blocking`]); a key a command only reads (SINTERSTORE's
    /// sources, COPY's source) is locked so that it cannot change midway.
    /// Neither counts as a modification for WATCH: only an applied write
    /// does (see [`super::watches`]).
    pub async fn lock_keys(&self, keys: &[(u32, &[u8], bool)]) -> StripeGuards {
        let guards = self.lock_keys_quietly(keys).await;
        // Once the stripes are taken: a woken client runs its command again
        // only after this writer (its burst, or its EXEC) is done.
        // Postmortem: woken before the writer took the stripe, a client
        // could run again first, find nothing, and wait for good.
        for (db, k, written) in keys {
            if *written {
                self.blocking.signal(*db, k);
            }
        }
        guards
    }

    /// [`RespState::lock_reading`] for a blocked command running again: it
    /// wakes no one (it would wake itself, first in line).
    pub async fn lock_as_waiter(&self, db: u32, written: &[&[u8]], read: &[&[u8]]) -> StripeGuards {
        self.lock_keys_quietly(&Self::marked(db, written, read)).await
    }

    async fn lock_keys_quietly(&self, keys: &[(u32, &[u8], bool)]) -> StripeGuards {
        let mut stripes: Vec<usize> =
            keys.iter().map(|(db, k, _)| Self::slot(*db, k) % LOCK_STRIPES).collect();
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
    pub(super) multi: Option<Vec<Vec<Vec<u8>>>>,
    /// Bytes `multi` holds (see [`MULTI_QUEUE_MAX_BYTES`]).
    pub(super) multi_bytes: usize,
    /// A command queued in this MULTI was refused: EXEC will abort.
    pub(super) multi_failed: bool,
    /// WATCHed keys (unwatched when dropped).
    pub(super) watched: Vec<super::watches::Watched>,
    /// Its channels and patterns, once it subscribed to any.
    pub subs: Option<super::pubsub::Subscriptions>,
    /// Set by a blocking command that found nothing: what the connection
    /// waits for before it replies (see [`super::blocking`]).
    pub block: Option<super::blocking::Block>,
    /// A blocked command is running again (woken): keys it waits on that
    /// now hold another type are passed over, as Redis serves a blocked
    /// client only from a key of the type it waits for.
    pub retrying: bool,
    /// What other connections see of it (CLIENT LIST); a detached one for
    /// a connection of no socket.
    pub info: Arc<super::clients::ClientInfo>,
    /// The command running, for [`super::stats::finish`].
    pub(super) running: Option<super::stats::Running>,
    /// CLIENT REPLY OFF: no reply is sent.
    pub reply_off: bool,
    /// CLIENT REPLY SKIP: the replies of this many commands are not sent.
    pub reply_skip: u8,
    /// A script's own connection: commands it calls run on it.
    pub in_script: bool,
    /// Its ACL user; `None` for a connection the node runs itself (a
    /// replicated database's leader running forwarded commands), which may
    /// run anything.
    pub acl: Option<super::acl::Session>,
    /// The error its command answers was counted already (a script's
    /// call's error, counted when the call answered it).
    pub(super) error_counted: bool,
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
            subs: None,
            block: None,
            retrying: false,
            info: Arc::new(super::clients::ClientInfo::new(
                id,
                SocketAddr::new(peer, 0),
                SocketAddr::from(([0, 0, 0, 0], 0)),
                -1,
            )),
            running: None,
            reply_off: false,
            reply_skip: 0,
            in_script: false,
            acl: None,
            error_counted: false,
        }
    }

    /// Whether the reply of the command that just ran is to be sent
    /// (CLIENT REPLY OFF and SKIP), counting a skipped one.
    pub fn reply_wanted(&mut self) -> bool {
        if self.reply_skip > 0 {
            self.reply_skip -= 1;
            return false;
        }
        !self.reply_off
    }

    /// Subscribed to a channel or pattern, in RESP2: only the
    /// subscribe-family commands, PING, QUIT and RESET run (Redis's
    /// "subscribed context").
    pub fn in_subscribed_context(&self) -> bool {
        self.proto < 3 && self.subs.as_ref().is_some_and(|s| s.count() > 0)
    }
}
