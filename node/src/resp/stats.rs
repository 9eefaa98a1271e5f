//! Counters INFO reports (commandstats, errorstats, stats), and the two
//! calls that keep them: [`begin`], from the dispatcher as a command
//! starts (it also waits out CLIENT PAUSE), and [`finish`], from the
//! connection once the command replied.
//!
//! Per command the cost is a few relaxed atomic adds on counters of that
//! command (one slot per command and subcommand of [`super::table`],
//! found by pointer arithmetic for a command and a short search for a
//! subcommand) and one `Instant::now()`; the error map's lock is taken on
//! error replies only.
//!
//! What differs from `redis-server` 7.0: commands queued in a MULTI count
//! when queued (Redis: when EXEC runs them); a blocked command counts once,
//! its time being that of its first run; commands a replicated database's
//! leader runs for another node count on the node the client talks to, and
//! those a client pipelines there count as calls without their time or
//! errors ([`pipelined`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::clients::{FLAG_BLOCKED, FLAG_MONITOR, FLAG_MULTI, FLAG_PUBSUB};
use super::reply::Reply;
use super::state::{Conn, RespState};
use super::table::{Command, Flag, Handler, COMMANDS};

pub use crate::counters::CommandStat;

/// Bytes of an error reply, its `-` included, within which a space must
/// end the prefix (Redis's `afterErrorReply`).
pub const ERROR_PREFIX_MAX_BYTES: usize = 32;

/// Error prefixes INFO errorstats keeps (Redis's `ERROR_STATS_NUMBER`).
pub const ERROR_PREFIXES_MAX: usize = 128;

/// Samples of the command and byte counters taken every
/// [`SAMPLE_INTERVAL_MS`], for the `instantaneous_*` fields, as Redis's
/// `trackInstantaneousMetric` (16 samples).
const SAMPLES: usize = 16;
/// Time between samples (Redis's 100 ms `serverCron`).
pub const SAMPLE_INTERVAL_MS: u64 = 100;

#[derive(Default)]
struct Samples {
    /// (commands, input bytes, output bytes) at the last sample.
    last: (u64, u64, u64),
    last_at: Option<Instant>,
    /// Per second since the sample before: (ops, input, output bytes).
    rates: Vec<(f64, f64, f64)>,
}

/// What INFO counts for a node.
pub struct Stats {
    /// One per command and subcommand, in table order: a command's slot,
    /// then its subcommands'.
    slots: Vec<CommandStat>,
    /// `name` of every slot (`client|list`).
    names: Vec<&'static str>,
    /// The slot of `COMMANDS[i]`.
    first_slot: Vec<u32>,
    /// Error replies by their first word (`ERR`, `WRONGTYPE`): a std Mutex
    /// taken on error replies only, never awaited while held.
    errors: Mutex<BTreeMap<String, u64>>,
    pub total_commands: AtomicU64,
    pub total_errors: AtomicU64,
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Keys removed because their TTL passed (Redis's `expired_keys`),
    /// when read or by the expirer.
    pub expired_keys: AtomicU64,
    /// The instantaneous rates (see [`Stats::sample`]): a std Mutex, taken
    /// by the sampler and INFO only.
    samples: Mutex<Samples>,
}

impl Default for Stats {
    fn default() -> Self {
        let mut names = Vec::new();
        let mut first_slot = Vec::with_capacity(COMMANDS.len());
        for c in COMMANDS {
            first_slot.push(names.len() as u32);
            names.push(c.name);
            names.extend(c.subcommands.iter().map(|s| s.name));
        }
        Stats {
            slots: names.iter().map(|_| CommandStat::default()).collect(),
            names,
            first_slot,
            errors: Mutex::default(),
            total_commands: AtomicU64::new(0),
            total_errors: AtomicU64::new(0),
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            samples: Mutex::default(),
        }
    }
}

impl Stats {
    /// The slot of `command` (a row of [`COMMANDS`]), or of its subcommand
    /// named `sub` when it has subcommands and one is named so.
    pub fn slot(&self, command: &'static Command, sub: Option<&[u8]>) -> Option<u32> {
        let base = COMMANDS.as_ptr() as usize;
        let offset = (command as *const Command as usize).checked_sub(base)?;
        let index = offset / std::mem::size_of::<Command>();
        let first = *self.first_slot.get(index)?;
        debug_assert!(std::ptr::eq(&COMMANDS[index], command));
        let Some(sub) = sub.filter(|_| !command.subcommands.is_empty()) else {
            return Some(first);
        };
        let sub = sub.to_ascii_lowercase();
        let at = command.subcommands.iter().position(|s| {
            s.name.split_once('|').is_some_and(|(_, n)| n.as_bytes() == sub.as_slice())
        });
        Some(at.map_or(first, |j| first + 1 + j as u32))
    }

    /// Counts one run of the command of `slot` that took `took` (and
    /// replied an error if `failed`), in Redis's `total_commands_processed`
    /// too: commands that ran (not unknown or refused ones), once each.
    pub fn count_call(&self, slot: u32, took: std::time::Duration, failed: bool) {
        self.total_commands.fetch_add(1, Ordering::Relaxed);
        self.slots[slot as usize].record(took, failed);
    }

    /// Counts a call of the command of `slot` refused before it ran (a
    /// wrong number of arguments).
    /// An error reply (`total_error_replies`, `errorstat_PREFIX`). As
    /// Redis's `afterErrorReply`: the prefix is the first word when a space
    /// ends it within the first [`ERROR_PREFIX_MAX_BYTES`] bytes, else
    /// `ERR`; line breaks count as spaces (the reply carries them so); at
    /// most [`ERROR_PREFIXES_MAX`] prefixes are kept, later new ones count
    /// in the total only.
    pub fn count_error(&self, text: &str) {
        self.total_errors.fetch_add(1, Ordering::Relaxed);
        // The reply ends at a NUL as Redis's does; its `-` counts in
        // Redis's 32 bytes.
        let text = text.split('\0').next().unwrap_or_default();
        let head = &text.as_bytes()[..text.len().min(ERROR_PREFIX_MAX_BYTES - 1)];
        let prefix = match head.iter().position(|b| matches!(b, b' ' | b'\r' | b'\n')) {
            Some(end) => String::from_utf8_lossy(&head[..end]).into_owned(),
            None => "ERR".to_owned(),
        };
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = errors.get_mut(&prefix) {
            *n += 1;
        } else if errors.len() < ERROR_PREFIXES_MAX {
            errors.insert(prefix, 1);
        }
    }

    /// A command that EXEC ran replied an error: a failed call of its
    /// slot, and an error reply `text` unless it was counted already (a
    /// script's call).
    pub fn count_failed(&self, command: &'static Command, args: &[Vec<u8>], text: Option<&str>) {
        if let Some(slot) = self.slot(command, args.get(1).map(Vec::as_slice)) {
            self.slots[slot as usize].failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(text) = text {
            self.count_error(text);
        }
    }

    pub fn count_rejected(&self, slot: u32) {
        self.slots[slot as usize].rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// How many slots there are (commands and subcommands).
    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The call durations of slot `slot`.
    pub fn histogram(&self, slot: u32) -> &crate::counters::Histogram {
        &self.slots[slot as usize].histogram
    }

    /// The slots a command name (lowercase; `parent|sub` for one
    /// subcommand) stands for, as LATENCY HISTOGRAM reads it: a command's
    /// own, a container's subcommands', none for an unknown name.
    pub fn slots_named(&self, name: &str) -> Vec<u32> {
        if let Some((parent, sub)) = name.split_once('|') {
            let Some(command) = super::table::lookup(parent) else { return Vec::new() };
            if super::table::subcommand(command, sub).is_none() {
                return Vec::new();
            }
            return self.slot(command, Some(sub.as_bytes())).into_iter().collect();
        }
        let Some(command) = super::table::lookup(name) else { return Vec::new() };
        let Some(first) = self.slot(command, None) else { return Vec::new() };
        if command.subcommands.is_empty() {
            return vec![first];
        }
        (1..=command.subcommands.len() as u32).map(|j| first + j).collect()
    }

    /// The name of slot `slot` (`client|list`).
    pub fn name(&self, slot: u32) -> Option<&'static str> {
        self.names.get(slot as usize).copied()
    }

    /// Adds the Redis protocol's figures to `e`: its commands (the counters
    /// of INFO commandstats), error replies by their first word (INFO
    /// errorstats), connections, bytes and expired keys.
    pub fn figures(&self, e: &mut crate::metrics::Exposition, connected: usize) {
        e.commands("resp", self.names.iter().copied().zip(&self.slots));
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let l = [("protocol", "resp")];
        e.gauge("connections", "Client connections open, by protocol.", None, &l, connected as f64);
        let received = n(&self.connections_received);
        e.counter(
            "connections_received",
            "Client connections accepted, by protocol.",
            &l,
            received,
        );
        e.counter(
            "connections_rejected",
            "Client connections refused (too many open), by protocol.",
            &l,
            n(&self.rejected_connections),
        );
        let bytes = Some(prometheus_client::registry::Unit::Bytes);
        e.counter_in(
            "network_received",
            "Bytes read from clients, by protocol.",
            bytes.clone(),
            &l,
            n(&self.net_input_bytes),
        );
        e.counter_in(
            "network_sent",
            "Bytes written to clients, by protocol.",
            bytes,
            &l,
            n(&self.net_output_bytes),
        );
        e.counter(
            "resp_expired_keys",
            "Redis keys removed because their TTL passed.",
            &[],
            n(&self.expired_keys),
        );
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (prefix, count) in errors {
            e.counter(
                "resp_error_replies",
                "Error replies of the Redis protocol, by their first word (INFO errorstats).",
                &[("prefix", prefix.as_str())],
                count,
            );
        }
    }

    /// `cmdstat_` lines of every command that ran or was refused.
    pub fn command_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, s) in self.names.iter().zip(&self.slots) {
            let (calls, usec) = (s.calls.load(Ordering::Relaxed), s.usec.load(Ordering::Relaxed));
            let (rejected, failed) =
                (s.rejected.load(Ordering::Relaxed), s.failed.load(Ordering::Relaxed));
            if calls == 0 && rejected == 0 && failed == 0 {
                continue;
            }
            let per_call = if calls == 0 { 0.0 } else { usec as f64 / calls as f64 };
            out.push(format!(
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},\
                 rejected_calls={rejected},failed_calls={failed}"
            ));
        }
        out
    }

    /// `errorstat_` lines, by error prefix.
    pub fn error_lines(&self) -> Vec<String> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        // As Redis's getSafeInfoString: a name keeps no `:` or line break.
        let safe = |p: &str| p.replace([':', '\r', '\n'], "_");
        errors.iter().map(|(prefix, n)| format!("errorstat_{}:count={n}", safe(prefix))).collect()
    }

    /// CONFIG RESETSTAT: every counter back to 0 (connected clients and
    /// the like are not counters).
    pub fn reset(&self) {
        for s in &self.slots {
            for c in [&s.calls, &s.usec, &s.rejected, &s.failed] {
                c.store(0, Ordering::Relaxed);
            }
            s.histogram.reset();
        }
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for c in [
            &self.total_commands,
            &self.total_errors,
            &self.connections_received,
            &self.rejected_connections,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.reads,
            &self.writes,
            &self.expired_keys,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        *self.samples.lock().unwrap_or_else(|p| p.into_inner()) = Samples::default();
    }

    /// Takes one sample of the counters (every [`SAMPLE_INTERVAL_MS`]).
    pub fn sample(&self) {
        let now = Instant::now();
        let current = (
            self.total_commands.load(Ordering::Relaxed),
            self.net_input_bytes.load(Ordering::Relaxed),
            self.net_output_bytes.load(Ordering::Relaxed),
        );
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = s.last_at {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let r =
                (rate(current.0, s.last.0), rate(current.1, s.last.1), rate(current.2, s.last.2));
            if s.rates.len() == SAMPLES {
                s.rates.remove(0);
            }
            s.rates.push(r);
        }
        s.last = current;
        s.last_at = Some(now);
    }

    /// The mean of the samples: (ops per second, input and output bytes
    /// per second).
    pub fn instantaneous(&self) -> (f64, f64, f64) {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.rates.len().max(1) as f64;
        let sum = s.rates.iter().fold((0.0, 0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
        (sum.0 / n, sum.1 / n, sum.2 / n)
    }
}

/// A command that started on a connection, for [`finish`].
#[derive(Debug, Clone, Copy)]
pub struct Running {
    slot: u32,
    started: Instant,
    /// Its arguments fit its arity (else it is refused: `rejected_calls`).
    arity_ok: bool,
    /// A blocked command running again once woken: counted when it
    /// blocked; only the slowlog times this run.
    woken: bool,
    /// Flagged `skip_slowlog` (EXEC), or queued in a MULTI (EXEC logs
    /// the commands it runs).
    skip_slowlog: bool,
    /// Queued in a MULTI: it runs later, in its EXEC.
    queued: bool,
    /// Not shown to monitors: flagged `admin` or `skip_monitor` (itself or
    /// its subcommand), or queued in a MULTI.
    skip_monitor: bool,
    /// Flagged `fast`: its latency events are `fast-command`.
    fast: bool,
}

/// The dispatcher's one call as a command starts on `conn` (`found` is its
/// row, if the command is known): waits while CLIENT PAUSE holds it, then
/// notes its start for [`finish`] and CLIENT LIST.
pub async fn begin(
    state: &RespState,
    conn: &mut Conn,
    found: Option<&'static Command>,
    args: &[Vec<u8>],
) {
    conn.error_counted = false;
    let Some(command) = found else { return };
    // Inside MULTI commands are queued, not run: only EXEC waits.
    // QUIT and RESET run at once inside MULTI too.
    let queued = conn.multi.is_some()
        && command.handler != Handler::Transaction
        && !matches!(command.name, "quit" | "reset");
    // One atomic load unless a pause is on.
    if !queued && state.pause.holds(state.started, true) {
        let write = writes(state, command, args, conn);
        if state.pause.holds(state.started, write) {
            // Nothing of the burst is held while waiting: reads of other
            // clients go on. Redis counts a paused client as blocked.
            super::stripes::release_held();
            conn.info.set_flag(FLAG_BLOCKED, true);
            state.pause.wait(state.started, write).await;
            conn.info.set_flag(FLAG_BLOCKED, false);
        }
    }
    let Some(slot) = state.stats.slot(command, args.get(1).map(Vec::as_slice)) else { return };
    let woken = conn.retrying;
    if !woken {
        conn.info.touch();
        conn.info.last_cmd.store(slot, Ordering::Relaxed);
    }
    let sub = super::table::checked_subcommand(command, args);
    let flagged = |f| command.has(f) || sub.is_ok_and(|s| s.is_some_and(|s| s.has(f)));
    conn.running = Some(Running {
        slot,
        started: Instant::now(),
        arity_ok: command.arity_fits(args.len()) && sub.is_ok(),
        woken,
        skip_slowlog: queued || flagged(Flag::SkipSlowlog),
        queued,
        skip_monitor: queued || flagged(Flag::SkipMonitor) || flagged(Flag::Admin),
        fast: flagged(Flag::Fast),
    });
}

/// The command that started on `conn` was refused before it ran (as
/// Redis's `rejectCommand`): counted as `rejected_calls`, neither logged
/// as slow nor shown to monitors.
pub fn refused(conn: &mut Conn) {
    if let Some(running) = conn.running.as_mut() {
        running.arity_ok = false;
    }
}

/// A command a client pipelined to a replicated database's leader (see
/// [`super::cluster::run_pipeline`]), which does not pass the dispatcher
/// here: it waits out CLIENT PAUSE and counts as a call, as [`begin`] and
/// [`finish`] would count it; its time and errors are the leader's, not
/// counted here.
pub async fn pipelined(state: &RespState, conn: &mut Conn, args: &[Vec<u8>]) {
    let found = super::table::lookup(&super::args::lower(&args[0]));
    begin(state, conn, found, args).await;
    if let Some(running) = conn.running.take() {
        state.stats.total_commands.fetch_add(1, Ordering::Relaxed);
        state.stats.slots[running.slot as usize].calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether CLIENT PAUSE WRITE holds `command` (called with `args`) on
/// `conn`: a command flagged `write` or `MAY_REPLICATE` (PUBLISH; EVAL
/// and EVALSHA unless their script declares `flags=no-writes`), or an
/// EXEC whose queue holds one of those, as Redis's
/// `is_may_replicate_command`.
fn writes(state: &RespState, command: &Command, args: &[Vec<u8>], conn: &Conn) -> bool {
    let writes_one = |c: &Command, args: &[Vec<u8>]| {
        if c.handler == Handler::Scripting && matches!(c.name, "eval" | "evalsha") {
            return !super::scripting::declares_no_writes(state, args);
        }
        if c.name == "fcall" {
            // A function flagged no-writes runs as a read (Redis's
            // fcallGetCommandFlags).
            let found = args.get(1).and_then(|f| state.scripts.functions.find(f));
            return !found.is_some_and(|f| f.no_writes);
        }
        c.has(Flag::Write) || c.may_replicate()
    };
    if command.name == "exec" {
        let queue = conn.multi.as_deref().unwrap_or_default();
        return queue.iter().any(|args| {
            super::table::lookup(&super::args::lower(&args[0])).is_some_and(|c| writes_one(c, args))
        });
    }
    writes_one(command, args)
}

/// Once `conn`'s command `args` replied `reply` (or blocked): counts it
/// and its time, counts an error reply, logs it if slow
/// ([`super::slowlog`]; once served, if it blocked), and updates what
/// CLIENT LIST shows of the connection.
pub fn finish(state: &RespState, conn: &mut Conn, reply: &Reply, args: &[Vec<u8>]) {
    let stats = &state.stats;
    let error = match reply {
        Reply::Error(e) => Some(e.as_str()),
        _ => None,
    };
    if let Some(running) = conn.running.take() {
        let took = running.started.elapsed();
        if running.arity_ok && !running.skip_slowlog && conn.block.is_none() {
            state.slowlog.note(conn, args, took);
            let event = if running.fast { "fast-command" } else { "command" };
            state.latency.sample(event, took);
        }
        if running.arity_ok && !running.skip_monitor && !running.woken {
            super::monitor::feed(state, conn.db, &conn.info.addr, args);
        }
        if running.woken {
            // Counted when it blocked; an error served when woken (an
            // XREADGROUP whose group went) counts as failed, as Redis's
            // `updateStatsOnUnblock` counts it.
            if error.is_some() {
                stats.slots[running.slot as usize].failed.fetch_add(1, Ordering::Relaxed);
            }
        } else if running.arity_ok {
            stats.count_call(running.slot, took, error.is_some());
            if conn.block.is_none() && !running.queued {
                let name = stats.names[running.slot as usize];
                crate::metrics::log_if_slow(&state.node.config, "resp", name, conn.info.addr, took);
            }
        } else {
            stats.count_rejected(running.slot);
        }
    }
    if let Some(e) = error.filter(|_| !std::mem::take(&mut conn.error_counted)) {
        stats.count_error(e);
    }
    let info = &conn.info;
    info.db.store(conn.db, Ordering::Relaxed);
    info.resp.store(conn.proto, Ordering::Relaxed);
    let multi = conn.multi.as_ref().map_or(-1, |q| q.len() as i64);
    info.multi.store(multi, Ordering::Relaxed);
    info.set_flag(FLAG_MULTI, multi >= 0);
    info.set_flag(FLAG_BLOCKED, conn.block.is_some());
    let (sub, psub) = conn.subs.as_ref().map_or((0, 0), |s| s.counts());
    info.set_flag(FLAG_PUBSUB, sub + psub > 0);
    info.set_flag(FLAG_MONITOR, conn.subs.as_ref().is_some_and(|s| s.is_monitor()));
    info.sub.store(sub as u32, Ordering::Relaxed);
    info.psub.store(psub as u32, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem: a script's error `X\r\nused_memory:0 z` was counted
    /// under the prefix `X\r\nused_memory:0`, which INFO printed as a line
    /// of its own; and every distinct prefix was kept, however many.
    #[test]
    fn error_prefixes_are_words_within_32_bytes_and_at_most_128() {
        let stats = Stats::default();
        stats.count_error("X\r\nused_memory:0 z");
        stats.count_error("WRONGTYPE Operation");
        stats.count_error(&format!("{} tail", "L".repeat(40)));
        stats.count_error("NOSPACE");
        stats.count_error("a:b c");
        stats.count_error(&format!("{} x", "W".repeat(31)));
        stats.count_error("Z\0Y x");
        let lines = stats.error_lines();
        assert!(lines.contains(&"errorstat_a_b:count=1".to_owned()), "{lines:?}");
        assert!(lines.contains(&"errorstat_X:count=1".to_owned()), "{lines:?}");
        assert!(lines.contains(&"errorstat_ERR:count=4".to_owned()), "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains('\n') && !l.contains('\r')));
        for i in 0..300 {
            stats.count_error(&format!("P{i} x"));
        }
        assert_eq!(stats.error_lines().len(), ERROR_PREFIXES_MAX);
        assert_eq!(stats.total_errors.load(Ordering::Relaxed), 307);
    }

    #[test]
    fn every_command_and_subcommand_has_its_own_slot() {
        let stats = Stats::default();
        let client = super::super::table::lookup("client").expect("client");
        let list = stats.slot(client, Some(b"LIST")).expect("a slot");
        assert_eq!(stats.name(list), Some("client|list"));
        assert_eq!(stats.name(stats.slot(client, None).expect("a slot")), Some("client"));
        // An unknown subcommand counts on its command.
        assert_eq!(stats.name(stats.slot(client, Some(b"nosuch")).expect("slot")), Some("client"));
        let get = super::super::table::lookup("get").expect("get");
        assert_eq!(stats.name(stats.slot(get, Some(b"list")).expect("a slot")), Some("get"));
        // A command that is not a row of the table has none.
        let copy: &'static Command = Box::leak(Box::new(*get));
        assert_eq!(stats.slot(copy, None), None);
    }

    #[test]
    fn lines_show_what_ran_and_reset_clears_them() {
        let stats = Stats::default();
        let get = super::super::table::lookup("get").expect("get");
        let slot = stats.slot(get, None).expect("a slot") as usize;
        stats.slots[slot].calls.store(4, Ordering::Relaxed);
        stats.slots[slot].usec.store(10, Ordering::Relaxed);
        stats.slots[slot].failed.store(1, Ordering::Relaxed);
        assert_eq!(
            stats.command_lines(),
            ["cmdstat_get:calls=4,usec=10,usec_per_call=2.50,rejected_calls=0,failed_calls=1"]
        );
        stats.errors.lock().expect("lock").insert("WRONGTYPE".into(), 2);
        assert_eq!(stats.error_lines(), ["errorstat_WRONGTYPE:count=2"]);
        stats.reset();
        assert!(stats.command_lines().is_empty() && stats.error_lines().is_empty());
    }

    #[test]
    fn instantaneous_rates_average_the_samples() {
        let stats = Stats::default();
        assert_eq!(stats.instantaneous(), (0.0, 0.0, 0.0));
        stats.sample();
        stats.total_commands.store(1000, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(20));
        stats.sample();
        let (ops, _, _) = stats.instantaneous();
        assert!(ops > 0.0 && ops <= 1000.0 / 0.02, "{ops}");
    }
}
