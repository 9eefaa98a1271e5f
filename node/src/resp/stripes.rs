//! Key locks of the Redis endpoint, by stripe, and held across a burst.
//!
//! A command that reads a key and then writes it (INCR, HSET, LPUSH, ...)
//! holds the key's stripe from its read until its write is applied, so two
//! such commands on one key never interleave. Within one burst of pipelined
//! commands from a connection, the stripes a command took are kept for the
//! next command that needs the same ones: a pipeline of 16 HSETs on one hot
//! key takes its lock once, not 16 times, each of which would queue behind
//! every other connection's command on that key and cost a wake-up of a
//! task on another thread. Redis likewise runs all the commands of a read
//! from one client before it turns to the next.
//!
//! Deadlock freedom: a connection never waits while it holds anything. A
//! command whose stripes are not all held releases what the burst holds,
//! then takes its own in stripe order; before waiting for the transaction
//! gate (EXEC runs alone) or for anything else that may take long, the
//! burst's stripes are released ([`release_held`]).

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// Number of stripes: keys hashing to one stripe share its lock.
pub const LOCK_STRIPES: usize = 1024;

tokio::task_local! {
    /// The stripes the current burst holds, with their guards. Set for the
    /// duration of one burst of a connection ([`with_burst`]); a `RefCell`
    /// because a task runs on one thread at a time and no borrow of it
    /// lives across an await.
    static HELD: RefCell<Held>;
}

#[derive(Default)]
struct Held {
    stripes: Vec<usize>,
    /// Kept for what dropping them does: unlocking.
    _guards: Vec<OwnedMutexGuard<()>>,
}

/// Guards of the stripes a command took itself (empty when the burst
/// holds them for it).
pub type StripeGuards = Vec<OwnedMutexGuard<()>>;

pub struct KeyLocks {
    /// tokio mutexes: a command holds its stripes across the awaits of its
    /// reads and its write.
    stripes: Vec<Arc<Mutex<()>>>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks { stripes: (0..LOCK_STRIPES).map(|_| Arc::new(Mutex::new(()))).collect() }
    }
}

impl KeyLocks {
    /// Locks `stripes` (sorted, deduplicated) for the current command.
    pub async fn lock(&self, stripes: Vec<usize>) -> StripeGuards {
        let held = HELD.try_with(|h| {
            let h = h.borrow();
            stripes.iter().all(|s| h.stripes.contains(s))
        });
        match held {
            Ok(true) => Vec::new(),
            Ok(false) => {
                release_held();
                let guards = self.acquire(&stripes).await;
                HELD.with(|h| *h.borrow_mut() = Held { stripes, _guards: guards });
                Vec::new()
            }
            Err(_) => self.acquire(&stripes).await,
        }
    }

    async fn acquire(&self, stripes: &[usize]) -> StripeGuards {
        let mut guards = Vec::with_capacity(stripes.len());
        for &s in stripes {
            guards.push(self.stripes[s].clone().lock_owned().await);
        }
        guards
    }
}

/// Runs one burst of a connection's commands; stripes they take are kept
/// until the next command needs others, or the burst ends.
pub async fn with_burst<F: std::future::Future>(burst: F) -> F::Output {
    HELD.scope(RefCell::new(Held::default()), burst).await
}

/// Releases the stripes the current burst holds (outside a burst: nothing
/// to do).
pub fn release_held() {
    let _ = HELD.try_with(|h| *h.borrow_mut() = Held::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_keeps_its_stripes_and_never_waits_holding_them() {
        let locks = Arc::new(KeyLocks::default());
        with_burst(async {
            let own = locks.lock(vec![1, 7]).await;
            assert!(own.is_empty(), "the burst holds them");
            assert!(locks.stripes[1].try_lock().is_err() && locks.stripes[7].try_lock().is_err());
            // Held already: no second acquisition (it would deadlock).
            assert!(locks.lock(vec![7]).await.is_empty());
            // Others: the held ones are let go first.
            let _ = locks.lock(vec![3]).await;
            assert!(locks.stripes[1].try_lock().is_ok() && locks.stripes[7].try_lock().is_ok());
            assert!(locks.stripes[3].try_lock().is_err());
            release_held();
            assert!(locks.stripes[3].try_lock().is_ok());
        })
        .await;
        // Outside a burst the command holds its own guards.
        let own = locks.lock(vec![2]).await;
        assert_eq!(own.len(), 1);
        assert!(locks.stripes[2].try_lock().is_err());
        drop(own);
        assert!(locks.stripes[2].try_lock().is_ok());
    }

    #[tokio::test]
    async fn the_burst_lets_go_when_it_ends() {
        let locks = Arc::new(KeyLocks::default());
        with_burst(async {
            let _ = locks.lock(vec![5]).await;
        })
        .await;
        assert!(locks.stripes[5].try_lock().is_ok());
    }
}
