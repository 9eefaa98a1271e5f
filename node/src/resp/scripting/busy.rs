//! The running script, and the BUSY state of Redis 7.0 (`script.c`): once
//! a script has run longer than `lua-time-limit` (`busy-reply-threshold`,
//! ms), every other command but those flagged `allow_busy` (AUTH, HELLO,
//! MULTI, DISCARD, WATCH, UNWATCH, QUIT, RESET, SCRIPT KILL, FUNCTION KILL,
//! FUNCTION STATS) answers `BUSY`, and commands already waiting for the
//! script to end are answered so too. SCRIPT KILL (FUNCTION KILL for a
//! function) stops a script that has not written yet; one that has is
//! `UNKILLABLE`, as in Redis (its writes are held back and would be
//! dropped whole, but Redis's contract is kept).
//!
//! Scripts run alone on the node (see [`super`]), so at most one is
//! current at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::view::sandbox::Interrupt;

/// `lua-time-limit`'s default (ms), as Redis's.
pub const LUA_TIME_LIMIT_DEFAULT_MS: u64 = 5_000;

/// What other clients get while an EVAL script is busy.
pub const BUSY_EVAL: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
/// What other clients get while a function is busy.
pub const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

/// How a killed script ends (Redis's words).
pub const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";

struct Current {
    id: u64,
    started: Instant,
    /// The function FCALL runs; `None` for an EVAL script.
    function: Option<String>,
    /// The command that runs it (FUNCTION STATS shows it).
    command: Vec<Vec<u8>>,
    wrote: bool,
    killed: bool,
}

/// The running script, if any, and whether it is busy.
pub struct Busy {
    current: Mutex<Option<Current>>,
    busy: AtomicBool,
    /// Wakes commands waiting for the script to end once it turns busy.
    pub turned_busy: tokio::sync::Notify,
    time_limit_ms: AtomicU64,
    next_id: AtomicU64,
    /// Stops the script VM's running call (its hook checks it).
    interrupt: std::sync::OnceLock<Interrupt>,
}

impl Default for Busy {
    fn default() -> Self {
        Busy {
            current: Mutex::new(None),
            busy: AtomicBool::new(false),
            turned_busy: tokio::sync::Notify::new(),
            time_limit_ms: AtomicU64::new(LUA_TIME_LIMIT_DEFAULT_MS),
            next_id: AtomicU64::new(1),
            interrupt: std::sync::OnceLock::new(),
        }
    }
}

/// A script begun; [`Busy::end`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Busy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The interrupt of the scripts' VMs (set once, when their environment
    /// is made).
    pub fn set_interrupt(&self, interrupt: Interrupt) {
        let _ = self.interrupt.set(interrupt);
    }

    /// CONFIG SET lua-time-limit (ms; 0: a script is busy at once).
    pub fn set_time_limit_ms(&self, ms: u64) {
        self.time_limit_ms.store(ms, Ordering::Relaxed);
    }

    /// A script starts (`function` for FCALL): it turns busy after the time
    /// limit unless it has ended by then.
    pub fn begin(self: &Arc<Self>, function: Option<String>, command: &[Vec<u8>]) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(interrupt) = self.interrupt.get() {
            interrupt.clear_view();
        }
        *self.lock() = Some(Current {
            id,
            started: Instant::now(),
            function,
            command: command.to_vec(),
            wrote: false,
            killed: false,
        });
        self.busy.store(false, Ordering::Release);
        let limit = Duration::from_millis(self.time_limit_ms.load(Ordering::Relaxed));
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            if me.lock().as_ref().is_some_and(|c| c.id == id) {
                me.busy.store(true, Ordering::Release);
                me.turned_busy.notify_waiters();
            }
        });
        Ticket(id)
    }

    /// The script wrote (it can no longer be killed).
    pub fn wrote(&self, ticket: Ticket) {
        if let Some(c) = self.lock().as_mut().filter(|c| c.id == ticket.0) {
            c.wrote = true;
        }
    }

    /// The script ended; whether SCRIPT KILL stopped it.
    pub fn end(&self, ticket: Ticket) -> bool {
        let mut current = self.lock();
        let killed = current.as_ref().is_some_and(|c| c.id == ticket.0 && c.killed);
        if current.as_ref().is_some_and(|c| c.id == ticket.0) {
            *current = None;
            self.busy.store(false, Ordering::Release);
            // The VM (and any made later: FUNCTION LOAD's) runs again.
            if let Some(interrupt) = self.interrupt.get() {
                interrupt.clear_view();
            }
        }
        killed
    }

    /// The BUSY error other commands get now, if a script is busy.
    pub fn busy_error(&self) -> Option<&'static str> {
        if !self.busy.load(Ordering::Acquire) {
            return None;
        }
        let current = self.lock();
        let c = current.as_ref()?;
        Some(if c.function.is_some() { BUSY_FUNCTION } else { BUSY_EVAL })
    }

    /// SCRIPT KILL (`eval`) or FUNCTION KILL, with Redis's refusals:
    /// `Err` is the error reply.
    pub fn kill(&self, eval: bool) -> Result<(), &'static str> {
        let mut current = self.lock();
        let Some(c) = current.as_mut() else {
            return Err("NOTBUSY No scripts in execution right now.");
        };
        if c.wrote {
            return Err("UNKILLABLE Sorry the script already executed write commands against the \
                        dataset. You can either wait the script termination or kill the server \
                        in a hard way using the SHUTDOWN NOSAVE command.");
        }
        match (eval, c.function.is_some()) {
            (true, true) => return Err(BUSY_FUNCTION),
            (false, false) => return Err(BUSY_EVAL),
            _ => {}
        }
        c.killed = true;
        if let Some(interrupt) = self.interrupt.get() {
            interrupt.stop_view();
        }
        Ok(())
    }

    /// Whether an EVAL script (not a function) is running: FUNCTION STATS
    /// then answers BUSY, as Redis's does.
    pub fn eval_running(&self) -> bool {
        self.lock().as_ref().is_some_and(|c| c.function.is_none())
    }

    /// What FUNCTION STATS shows of a running function: its name, its
    /// command, and how long it has run (ms).
    pub fn running_function(&self) -> Option<(String, Vec<Vec<u8>>, u64)> {
        let current = self.lock();
        let c = current.as_ref()?;
        let name = c.function.clone()?;
        Some((name, c.command.clone(), c.started.elapsed().as_millis() as u64))
    }
}
