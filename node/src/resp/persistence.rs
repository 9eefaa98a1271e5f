//! SAVE, BGSAVE, LASTSAVE and SHUTDOWN, and INFO's persistence figures.
//!
//! Monotable keeps no RDB snapshot nor AOF: every write is in its chunk's
//! log, durable as `--fsync` says before it is acknowledged. SAVE makes
//! everything written so far durable at once whatever `--fsync` says
//! ([`crate::node::Node::sync_all`]: the catalog flushed, the data
//! directory's file system synced), which under `--fsync always` finds
//! nothing left to do. BGSAVE does the same on a blocking thread. The
//! changes counted since the last save (Redis's `dirty`, INFO's
//! `rdb_changes_since_last_save`) are counted per write as
//! [`super::keyspace::keys_changed`] says, which is Redis's count for
//! most commands.
//!
//! SHUTDOWN saves (unless NOSAVE; with FORCE a failed save does not stop
//! it), then stops the node as SIGTERM does: new requests refused, those
//! running finished, every chunk closed. The connection that asked is
//! closed without a reply, as Redis's is. ABORT answers as Redis does when
//! no shutdown waits (there is never one to abort: a shutdown starts at
//! once).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::args::lower;
use super::errors::SYNTAX;
use super::keyspace::now_ms;
use super::reply::Reply;
use super::state::{Conn, RespState};
use crate::node::Node;

/// What INFO's persistence section and LASTSAVE report, and SHUTDOWN's
/// request to the server.
pub struct Saves {
    /// Changes since the last save began (see the module doc).
    dirty: AtomicU64,
    /// Unix seconds of the last save that succeeded (the start of the
    /// endpoint before any).
    last_save: AtomicU64,
    /// Saves that succeeded.
    saves: AtomicU64,
    /// A BGSAVE runs.
    in_progress: AtomicBool,
    /// Whether the last BGSAVE succeeded.
    last_ok: AtomicBool,
    /// How long the last BGSAVE took, in seconds (-1: none yet).
    last_bgsave_secs: std::sync::atomic::AtomicI64,
    /// When the running BGSAVE began (unix milliseconds).
    bgsave_began_ms: AtomicU64,
    /// SHUTDOWN asked the server to stop (a permit kept until it waits).
    pub shutdown: tokio::sync::Notify,
}

impl Default for Saves {
    fn default() -> Self {
        Saves {
            dirty: AtomicU64::new(0),
            last_save: AtomicU64::new(now_ms() / 1000),
            saves: AtomicU64::new(0),
            in_progress: AtomicBool::new(false),
            last_ok: AtomicBool::new(true),
            last_bgsave_secs: std::sync::atomic::AtomicI64::new(-1),
            bgsave_began_ms: AtomicU64::new(0),
            shutdown: tokio::sync::Notify::new(),
        }
    }
}

impl Saves {
    /// Counts `changes` made by a write just applied.
    pub fn modified(&self, changes: u64) {
        self.dirty.fetch_add(changes, Ordering::Relaxed);
    }

    /// CONFIG RESETSTAT: the count of saves starts again.
    pub fn reset_stats(&self) {
        self.saves.store(0, Ordering::Relaxed);
    }

    /// INFO's persistence lines this module knows, in INFO's order.
    pub fn info(&self) -> [String; 7] {
        let in_progress = self.in_progress.load(Ordering::Acquire);
        let status = if self.last_ok.load(Ordering::Acquire) { "ok" } else { "err" };
        let current = match in_progress {
            true => {
                (now_ms().saturating_sub(self.bgsave_began_ms.load(Ordering::Acquire)) / 1000)
                    as i64
            }
            false => -1,
        };
        [
            format!("rdb_changes_since_last_save:{}", self.dirty.load(Ordering::Relaxed)),
            format!("rdb_bgsave_in_progress:{}", u8::from(in_progress)),
            format!("rdb_last_save_time:{}", self.last_save.load(Ordering::Relaxed)),
            format!("rdb_last_bgsave_status:{status}"),
            format!("rdb_last_bgsave_time_sec:{}", self.last_bgsave_secs.load(Ordering::Relaxed)),
            format!("rdb_current_bgsave_time_sec:{current}"),
            format!("rdb_saves:{}", self.saves.load(Ordering::Relaxed)),
        ]
    }
}

/// Makes everything written so far durable (see the module doc); on
/// success the changes counted before it began are cleared.
async fn save_now(node: Arc<Node>, saves: &Saves) -> std::io::Result<()> {
    let counted = saves.dirty.load(Ordering::Relaxed);
    let synced = tokio::task::spawn_blocking(move || node.sync_all())
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    match &synced {
        Ok(()) => {
            saves.dirty.fetch_sub(counted, Ordering::Relaxed);
            saves.last_save.store(now_ms() / 1000, Ordering::Relaxed);
            saves.saves.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!(error = %e, "SAVE failed: the data directory could not be synced")
        }
    }
    synced
}

/// Runs SAVE, BGSAVE, LASTSAVE or SHUTDOWN (`name`, its arity checked);
/// `in_exec` when EXEC runs it.
pub async fn run(
    state: &RespState,
    conn: &mut Conn,
    in_exec: bool,
    name: &str,
    args: &[Vec<u8>],
) -> Reply {
    match name {
        "lastsave" => Reply::Int(state.saves.last_save.load(Ordering::Relaxed) as i64),
        "save" => {
            if state.saves.in_progress.load(Ordering::Acquire) {
                return Reply::err("ERR Background save already in progress");
            }
            match save_now(state.node.clone(), &state.saves).await {
                Ok(()) => Reply::ok(),
                Err(_) => Reply::err("ERR"),
            }
        }
        "bgsave" => bgsave(state, in_exec, args),
        _ => shutdown(state, conn, args).await,
    }
}

/// BGSAVE [SCHEDULE], as Redis 7.0's `bgsaveCommand`: refused while one
/// runs (SCHEDULE waits only for other background work, which Monotable
/// does not have); inside EXEC it is "scheduled" (it starts at once).
fn bgsave(state: &RespState, in_exec: bool, args: &[Vec<u8>]) -> Reply {
    match args.get(1).map(|a| lower(a)) {
        None => {}
        Some(a) if a == "schedule" && args.len() == 2 => {}
        Some(_) => return Reply::err(SYNTAX),
    }
    let saves = &state.saves;
    if saves.in_progress.swap(true, Ordering::AcqRel) {
        return Reply::err("ERR Background save already in progress");
    }
    saves.bgsave_began_ms.store(now_ms(), Ordering::Release);
    let (node, saves) = (state.node.clone(), saves.clone());
    actix_rt::spawn(async move {
        let began = std::time::Instant::now();
        let ok = save_now(node, &saves).await.is_ok();
        saves.last_bgsave_secs.store(began.elapsed().as_secs() as i64, Ordering::Relaxed);
        saves.last_ok.store(ok, Ordering::Release);
        saves.in_progress.store(false, Ordering::Release);
    });
    match in_exec {
        true => Reply::Simple("Background saving scheduled"),
        false => Reply::Simple("Background saving started"),
    }
}

/// SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT], parsed as Redis 7.0's.
async fn shutdown(state: &RespState, conn: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let (mut nosave, mut save, mut force, mut abort, mut other) =
        (false, false, false, false, false);
    for a in &args[1..] {
        match lower(a).as_str() {
            "nosave" => nosave = true,
            "save" => save = true,
            "now" => other = true,
            "force" => force = true,
            "abort" => abort = true,
            _ => return Reply::err(SYNTAX),
        }
    }
    if (abort && (nosave || save || force || other)) || (nosave && save) {
        return Reply::err(SYNTAX);
    }
    if abort {
        // A shutdown starts at once: there is never one waiting to abort.
        return Reply::err("ERR No shutdown in progress.");
    }
    // A busy script stops only a SHUTDOWN NOSAVE (Redis's shutdownCommand).
    if !nosave {
        if let Some(busy) = state.scripts.busy.busy_error() {
            return Reply::err(busy);
        }
    }
    if !nosave && save_now(state.node.clone(), &state.saves).await.is_err() && !force {
        return Reply::err("ERR Errors trying to SHUTDOWN. Check logs.");
    }
    tracing::info!(client = conn.id, "SHUTDOWN asked by a Redis client");
    state.saves.shutdown.notify_one();
    // Closed without a reply, as Redis's process exits.
    conn.closing = true;
    Reply::Raw(Vec::new())
}
